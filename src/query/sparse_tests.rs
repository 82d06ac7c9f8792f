//! The sparse side in PostgreSQL: document heads, query counts and fitted weights.
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::pgvector::SparseVec;
    use crate::test_support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn documents_match_the_independent_sparse_reference() {
        register_sparse_model();
        let r = lr_testkit::sparse_reference();
        for t in r["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            let got = Spi::get_one_with_args::<SparseVec>(
                "SELECT lightretriever.lr_encode_document_sparse($1, 'splade')",
                &[text.into()],
            )
            .unwrap()
            .unwrap()
            .0;
            assert_eq!(got.dim, 30522);
            let want = lr_testkit::id_weights(&t["weights"]);
            let got_pairs: Vec<(u32, f32)> = got.indices.iter().copied().zip(got.values.iter().copied()).collect();
            let significant = |p: &[(u32, f32)]| p.iter().filter(|x| x.1 > 1e-3).map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(significant(&got_pairs), significant(&want), "{text:?}");
            for (id, w) in &want {
                let g = got_pairs.iter().find(|p| p.0 == *id).map_or(0.0, |p| p.1);
                assert!((g - w).abs() <= 1e-4, "{text:?} id {id}: {g} vs {w}");
            }
        }
    }

    #[pg_test]
    fn batched_documents_keep_order_and_nulls_and_match_the_reference() {
        register_sparse_model();
        Spi::run("SET LOCAL lightretriever.default_sparse_model = 'splade'").unwrap();
        let r = lr_testkit::sparse_reference();
        let texts: Vec<String> = r["texts"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap().to_owned()).collect();
        // A NULL between the texts: one row per element, in order, NULL for NULL.
        let mut items: Vec<Option<String>> = texts.iter().cloned().map(Some).collect();
        items.insert(1, None);
        let rows: Vec<(i64, Option<SparseVec>)> = Spi::connect(|c| {
            c.select(
                "SELECT n, v FROM lightretriever.lr_encode_documents_sparse($1) WITH ORDINALITY AS t(v, n) ORDER BY n",
                None,
                &[items.clone().into()],
            )
            .unwrap()
            .map(|row| (row.get::<i64>(1).unwrap().unwrap(), row.get::<SparseVec>(2).unwrap()))
            .collect()
        });
        assert_eq!(rows.len(), items.len());
        assert!(rows[1].1.is_none(), "NULL in, NULL out");
        let batched: Vec<&SparseVec> = rows.iter().filter_map(|r| r.1.as_ref()).collect();
        for ((text, got), t) in texts.iter().zip(batched).zip(r["texts"].as_array().unwrap()) {
            let got: Vec<(u32, f32)> = got.0.indices.iter().copied().zip(got.0.values.iter().copied()).collect();
            for (id, w) in lr_testkit::id_weights(&t["weights"]) {
                let g = got.iter().find(|p| p.0 == id).map_or(0.0, |p| p.1);
                assert!((g - w).abs() <= 1e-4, "{text:?} id {id}: {g} vs {w}");
            }
            // The same vector as one call for this text alone (batching changes nothing).
            let alone = Spi::get_one_with_args::<SparseVec>("SELECT lightretriever.lr_encode_document_sparse($1)", &[text.as_str().into()])
                .unwrap()
                .unwrap()
                .0;
            assert_eq!(alone.indices, got.iter().map(|p| p.0).collect::<Vec<_>>(), "{text:?}");
            for (a, (_, b)) in alone.values.iter().zip(&got) {
                assert!((a - b).abs() <= 1e-5, "{text:?}: {a} vs {b}");
            }
        }
        let empty = Spi::get_one::<i64>("SELECT count(*) FROM lightretriever.lr_encode_documents_sparse(ARRAY[]::text[])").unwrap();
        assert_eq!(empty, Some(0));
    }

    #[pg_test]
    fn query_counts_and_pgvector_inner_product() {
        register_sparse_model();
        Spi::run("SET LOCAL lightretriever.default_sparse_model = 'splade'").unwrap();
        let q = Spi::get_one::<SparseVec>("SELECT lightretriever.lr_encode_query_sparse('wing wing flutter')")
            .unwrap()
            .unwrap()
            .0;
        // "wing" = 3358, "flutter" = 23638 in the uncased BERT vocabulary.
        assert_eq!(q.indices, vec![3358, 23638]);
        assert_eq!(q.values, vec![2.0, 1.0]);
        // The same bound as the dense lookup: a run of over 4 MiB with no place to cut is an ERROR.
        let message = error_of("SELECT lightretriever.lr_encode_query_sparse(repeat('é', 2200000))");
        assert!(message.contains("too long to tokenize"), "{message}");
        // pgvector's own <#> agrees with the Rust inner product of the two sides.
        let doc = "Wing flutter of aircraft at transonic speeds.";
        let (ip, d) = Spi::get_two_with_args::<f32, SparseVec>(
            "SELECT -(lightretriever.lr_encode_query_sparse('wing wing flutter') <#> d)::real, d
               FROM lightretriever.lr_encode_document_sparse($1) AS d",
            &[doc.into()],
        )
        .unwrap();
        let (ip, d) = (ip.unwrap(), d.unwrap().0);
        assert!(ip > 0.0);
        assert!((ip - q.dot(&d)).abs() < 1e-4, "{ip} vs {}", q.dot(&d));
    }

    fn sparse_query(sql: &str) -> (Vec<u32>, Vec<f32>) {
        let q = Spi::get_one::<SparseVec>(sql).unwrap().unwrap().0;
        (q.indices, q.values)
    }

    /// Four documents: "wing" (3358) in three, "flutter" (23638) in one, of N = 4 (the NULL
    /// row is not a document).
    fn wing_docs() {
        register_sparse_model();
        Spi::run(
            "CREATE TABLE wing_docs (id int PRIMARY KEY, body text);
             INSERT INTO wing_docs VALUES (1, 'Wing flutter at speed'), (2, 'a wing'), (3, 'wing wing wing'),
                                          (4, 'tail fins'), (5, NULL)",
        )
        .unwrap();
    }

    fn idf(df: f64) -> f32 {
        (1.0 + (4.0 - df + 0.5) / (df + 0.5)).ln() as f32
    }

    #[pg_test]
    fn fitted_weights_multiply_the_query_counts() {
        wing_docs();
        let before = sparse_query("SELECT lightretriever.lr_encode_query_sparse('wing wing flutter', 'splade')");
        assert_eq!(before, (vec![3358, 23638], vec![2.0, 1.0]), "no weights yet: raw counts");
        let report = Spi::get_one::<pgrx::JsonB>("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(report["version"], 1);
        assert_eq!(report["documents"], 4);
        assert_eq!(report["method"], "idf");
        let (ids, values) = sparse_query("SELECT lightretriever.lr_encode_query_sparse('wing wing flutter', 'splade')");
        assert_eq!(ids, vec![3358, 23638]);
        assert!((values[0] - 2.0 * idf(3.0)).abs() < 1e-6, "{values:?}");
        assert!((values[1] - idf(1.0)).abs() < 1e-6, "{values:?}");
        assert_eq!(
            sparse_query("SELECT lightretriever.lr_encode_query_sparse('wing wing flutter', 'splade', weighting => 'counts')"),
            before
        );
        let fitted = sparse_query("SELECT lightretriever.lr_encode_query_sparse('wing wing flutter', 'splade', weighting => 'fitted')");
        assert_eq!(fitted, (ids, values.clone()));

        // lr_search's sparse side is the weighted query against the sparsevec column.
        Spi::run(
            "ALTER TABLE wing_docs ADD COLUMN sp sparsevec(30522);
             UPDATE wing_docs SET sp = lightretriever.lr_encode_document_sparse(body, 'splade')",
        )
        .unwrap();
        let (score, want) = Spi::get_two::<f32, f32>(
            "SELECT s.sparse_score, (-(lightretriever.lr_encode_query_sparse('wing wing flutter', 'splade') <#> d.sp))::real
               FROM lightretriever.lr_search('wing_docs', 'wing wing flutter', k => 1, mode => 'sparse', sparse_model => 'splade') s
               JOIN wing_docs d ON d.id = s.id",
        )
        .unwrap();
        assert_eq!(score, want);

        // A refit replaces the weights (another corpus: "flutter" now in two of three).
        Spi::run("DELETE FROM wing_docs WHERE id = 3; UPDATE wing_docs SET body = 'flutter' WHERE id = 4").unwrap();
        let report = Spi::get_one::<pgrx::JsonB>("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(report["version"], 2);
        let (_, values) = sparse_query("SELECT lightretriever.lr_encode_query_sparse('flutter', 'splade')");
        let n = 3.0;
        assert!((values[0] - (1.0 + (n - 2.0 + 0.5) / 2.5f64).ln() as f32).abs() < 1e-6, "{values:?}");
    }

    /// A fit reads each text only up to what its tokenizer looks at (a document over 4 MiB counts
    /// its first 4 MiB, cut between words, as when the whole text was read), and the corpus only
    /// up to `lightretriever.max_fit_corpus_size`: an owner's table of many huge texts is an
    /// ERROR, not a backend that runs out of memory.
    #[pg_test]
    fn a_fit_reads_a_bounded_corpus() {
        wing_docs();
        // 5 MB: "flutter" lies past the first 4 MiB, "tail" within it.
        Spi::run("INSERT INTO wing_docs VALUES (6, repeat('tail ', 1000000) || 'flutter')").unwrap();
        let report = Spi::get_one::<pgrx::JsonB>("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(report["documents"], 5);
        let idf5 = |df: f64| (1.0 + (5.0 - df + 0.5) / (df + 0.5)).ln() as f32;
        let (_, values) = sparse_query("SELECT lightretriever.lr_encode_query_sparse('flutter tail', 'splade')");
        assert!((values[0] - idf5(2.0)).abs() < 1e-6 && (values[1] - idf5(1.0)).abs() < 1e-6, "{values:?}");

        // 5 MB of text counts its first 4 MiB against a bound of 8 MB; three such rows pass it.
        Spi::run("SET lightretriever.max_fit_corpus_size = '8MB'").unwrap();
        Spi::run("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')").unwrap();
        Spi::run("INSERT INTO wing_docs SELECT i, repeat('tail ', 1000000) FROM generate_series(7, 9) i").unwrap();
        let message = error_of("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')");
        assert!(message.contains("larger than lightretriever.max_fit_corpus_size (8 MB) after 5 rows"), "{message}");
        let version = Spi::get_one::<i32>("SELECT version FROM lightretriever.lr_sparse_query_weights WHERE model = 'splade'").unwrap();
        assert_eq!(version, Some(2), "the failed fit wrote nothing");
        Spi::run("RESET lightretriever.max_fit_corpus_size").unwrap();
        let report = Spi::get_one::<pgrx::JsonB>("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(report["documents"], 8);
    }

    #[pg_test]
    fn a_model_dropped_and_fitted_again_is_not_served_stale_weights() {
        wing_docs();
        let flutter = || sparse_query("SELECT lightretriever.lr_encode_query_sparse('flutter', 'splade')").1[0];
        Spi::run("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')").unwrap();
        assert!((flutter() - idf(1.0)).abs() < 1e-6);
        // Same name, same version number (1), other corpus: "flutter" now in all four documents.
        Spi::run(
            "SELECT lightretriever.lr_drop_model('splade');
             UPDATE wing_docs SET body = body || ' flutter'",
        )
        .unwrap();
        register_sparse_model();
        Spi::run("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')").unwrap();
        assert_eq!(Spi::get_one::<i32>("SELECT version FROM lightretriever.lr_sparse_query_weights").unwrap(), Some(1));
        assert!((flutter() - idf(4.0)).abs() < 1e-6, "{} vs {}", flutter(), idf(4.0));
    }

    #[pg_test(error = "lightretriever: sparse model \"splade\" has no fitted query weights")]
    fn fitted_weighting_needs_weights() {
        register_sparse_model();
        Spi::run("SELECT lightretriever.lr_encode_query_sparse('wing', 'splade', weighting => 'fitted')").unwrap();
    }

    #[pg_test(error = "lightretriever: unknown sparse query weighting \"bm25\"")]
    fn unknown_weighting_is_an_error() {
        register_sparse_model();
        Spi::run("SELECT lightretriever.lr_encode_query_sparse('wing', 'splade', weighting => 'bm25')").unwrap();
    }

    #[pg_test(error = "lightretriever: the tokenizer of model \"splade\" has changed since its sparse query weights were fitted")]
    fn weights_of_another_tokenizer_are_refused() {
        wing_docs();
        Spi::run(
            "SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body');
             UPDATE lightretriever.lr_sparse_query_weights SET tokenizer_fingerprint = 'another tokenizer'",
        )
        .unwrap();
        Spi::run("SELECT lightretriever.lr_encode_query_sparse('wing', 'splade')").unwrap();
    }

    #[pg_test(error = "lightretriever: only superusers may fit sparse query weights")]
    fn only_superusers_fit_sparse_weights() {
        wing_docs();
        Spi::run("CREATE ROLE lr_weights_user; GRANT SELECT ON wing_docs TO lr_weights_user; SET LOCAL ROLE lr_weights_user").unwrap();
        Spi::run("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'wing_docs', 'body')").unwrap();
    }

    #[pg_test(error = "lightretriever: no_docs has no text in column \"body\" to fit on")]
    fn fitting_on_no_documents_is_an_error() {
        register_sparse_model();
        Spi::run("CREATE TABLE no_docs (id int PRIMARY KEY, body text)").unwrap();
        Spi::run("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'no_docs', 'body')").unwrap();
    }

    #[pg_test(error = "lightretriever: model \"minilm\" has no masked-LM head, so it cannot encode sparse vectors")]
    fn dense_models_cannot_encode_sparse() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_encode_document_sparse('text', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: the query has no tokens")]
    fn blank_sparse_query_is_an_error() {
        register_sparse_model();
        Spi::run("SELECT lightretriever.lr_encode_query_sparse('   ', 'splade')").unwrap();
    }
}
