//! The sparse side of LightRetriever: documents by a masked-LM head (SPLADE-style
//! `max_pos log(1 + relu(logits))`), queries by raw token counts — no model on the query path —
//! times per-id weights once `lr_fit_sparse_query_weights` has fitted them on the user's corpus.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use lr_table::MAX_QUERY_TOKENS;
use lr_vector::SparseVector;
use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::guc::resolve_sparse_model;
use crate::pgvector::SparseVec;

thread_local! {
    /// Query tokenizers by model path: the query side needs only the vocabulary.
    static TOKENIZERS: RefCell<HashMap<String, Rc<lr_tokenizer::QueryTokenizer>>> = RefCell::new(HashMap::new());
    /// Fitted query weights by model, with the catalog row version (xmin/ctid) they were read at (a refit,
    /// or a model dropped and fitted again, writes a new row version).
    static WEIGHTS: RefCell<HashMap<String, (String, Rc<Vec<f32>>)>> = RefCell::new(HashMap::new());
}

/// How a sparse query's token counts are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryWeighting {
    /// The fitted weights when the model has some, else raw counts.
    Auto,
    /// Raw counts (LightRetriever's query side), fitted weights or not.
    Counts,
    /// The fitted weights; an error when there are none.
    Fitted,
}

impl QueryWeighting {
    fn parse(s: &str) -> QueryWeighting {
        match s {
            "auto" => QueryWeighting::Auto,
            "counts" => QueryWeighting::Counts,
            "fitted" => QueryWeighting::Fitted,
            other => raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("lightretriever: unknown sparse query weighting \"{other}\""),
                Some("Use 'auto' (fitted weights when there are some), 'counts' or 'fitted'."),
            ),
        }
    }
}

/// The fitted query weights of sparse model `name`, if any (read once per row version per
/// backend). The tokenizer must be the one they were fitted with.
fn fitted_weights(name: &str, info: &lr_model::ModelInfo) -> Option<Rc<Vec<f32>>> {
    let version = crate::error::row_or_none(Spi::get_one_with_args::<String>(
        "SELECT xmin::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) ctid::pg_catalog.text
           FROM lightretriever.lr_sparse_query_weights WHERE model OPERATOR(pg_catalog.=) $1",
        &[name.into()],
    ))
    .flatten()?;
    if let Some(w) = WEIGHTS.with(|m| m.borrow().get(name).filter(|c| c.0 == version).map(|c| c.1.clone())) {
        return Some(w);
    }
    let (weights, fingerprint) = Spi::get_two_with_args::<Vec<Option<f32>>, String>(
        "SELECT weights, tokenizer_fingerprint FROM lightretriever.lr_sparse_query_weights WHERE model OPERATOR(pg_catalog.=) $1",
        &[name.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let refit = format!("Refit them: SELECT lightretriever.lr_fit_sparse_query_weights('{name}', source, text_column).");
    let current = lr_table::fingerprint_file(&info.tokenizer_path()).or_raise(Code::ERRCODE_IO_ERROR);
    if fingerprint.as_deref() != Some(current.as_str()) {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: the tokenizer of model \"{name}\" has changed since its sparse query weights were fitted"),
            Some(&refit),
        );
    }
    let weights: Vec<f32> = weights.unwrap_or_default().into_iter().map(|w| w.unwrap_or(f32::NAN)).collect();
    if weights.len() != info.vocab_size || weights.iter().any(|w| !w.is_finite()) {
        raise(
            Code::ERRCODE_DATA_CORRUPTED,
            format!("lightretriever: the sparse query weights of model \"{name}\" are not {} finite values", info.vocab_size),
            Some(&refit),
        );
    }
    let weights = Rc::new(weights);
    WEIGHTS.with(|m| m.borrow_mut().insert(name.to_owned(), (version, weights.clone())));
    Some(weights)
}

/// Fits per-id query weights for sparse model `model` on the non-NULL values of
/// `source.text_column` — no labels: the idf of each token id over those documents (docs/quality.md
/// chose it on held-out pseudo-queries). From then on `lr_encode_query_sparse` (and
/// `lr_search`) weight each raw query token count by its id's idf. Replaces earlier weights of
/// the model; returns what was done.
#[pg_extern(volatile, parallel_unsafe)]
#[pgrx::search_path(pg_catalog, pg_temp)]
fn lr_fit_sparse_query_weights(model: Option<&str>, source: Option<pgrx::PgRelation>, text_column: Option<&str>) -> pgrx::JsonB {
    crate::error::require_superuser("fit sparse query weights");
    let model = crate::error::required(model, "model");
    let (source, text_column) = (crate::error::required(source, "source"), crate::error::required(text_column, "text_column"));
    crate::catalog::lock_model(model);
    let info = crate::catalog::load_model(model);
    require_lm_head(model, &info);
    let relid = source.oid();
    drop(source);
    let started = std::time::Instant::now();
    let (texts, _) = crate::corpus::corpus_rows(relid, text_column, None);
    let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let table = crate::spi::table_name(relid);
    if docs.is_empty() {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: {table} has no text in column \"{text_column}\" to fit on"),
            None,
        );
    }
    let tokenizer_path = info.tokenizer_path();
    let tokenizer = lr_tokenizer::load_tokenizer(&tokenizer_path, None).or_raise(Code::ERRCODE_IO_ERROR);
    let weights = lr_fit::sparse_query_weights(&docs, &tokenizer, info.vocab_size, &mut |_, _| {
        pgrx::check_for_interrupts!();
    })
        .or_raise(Code::ERRCODE_DATA_EXCEPTION);
    let fingerprint = lr_table::fingerprint_file(&tokenizer_path).or_raise(Code::ERRCODE_IO_ERROR);
    let absent = lr_fit::idf_of(&[0], docs.len(), 1.0)[0];
    let ids_in_corpus = weights.iter().filter(|&&w| w < absent).count();
    let build = serde_json::json!({
        "source": table,
        "text_column": text_column,
        "documents": docs.len(),
    });
    let version = Spi::get_one_with_args::<i32>(
        "INSERT INTO lightretriever.lr_sparse_query_weights AS w (model, version, method, weights, tokenizer_fingerprint, build)
         VALUES ($1, 1, 'idf', $2, $3, $4)
         ON CONFLICT (model) DO UPDATE
            SET version = w.version OPERATOR(pg_catalog.+) 1, method = excluded.method, weights = excluded.weights,
                tokenizer_fingerprint = excluded.tokenizer_fingerprint, build = excluded.build, built_at = pg_catalog.now()
         RETURNING version",
        &[model.into(), weights.into(), fingerprint.into(), pgrx::JsonB(build).into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or_default();
    pgrx::JsonB(serde_json::json!({
        "model": model,
        "version": version,
        "method": "idf",
        "documents": docs.len(),
        "vocab": info.vocab_size,
        "ids_in_corpus": ids_in_corpus,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

pub fn require_lm_head(name: &str, info: &lr_model::ModelInfo) {
    if !info.has_lm_head {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("lightretriever: model \"{name}\" has no masked-LM head, so it cannot encode sparse vectors"),
            Some("Register a SPLADE-style BertForMaskedLM model (the default is splade-tiny) and pass it as model."),
        );
    }
}

/// A sparse vector over the model's vocabulary, or an error naming the cause (pgvector's
/// 16,000 non-zero limit included: never a silent cut).
fn to_sparsevec(dim: usize, pairs: Vec<(u32, f32)>) -> SparseVec {
    SparseVec(SparseVector::from_pairs(dim, pairs).or_raise(Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED))
}

/// Encodes one document with a masked-LM model's head: a weight per vocabulary id.
/// NULL text gives NULL; NULL model means `lightretriever.default_sparse_model`.
#[pg_extern(stable, parallel_safe)]
fn lr_encode_document_sparse(doc: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<SparseVec> {
    let doc = doc?;
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    require_lm_head(&name, &info);
    let pairs = crate::inference::sparse(&name, &info, vec![doc.to_owned()]).pop().unwrap_or_default();
    if pairs.len() > lr_vector::SPARSEVEC_MAX_NNZ {
        raise(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "lightretriever: the sparse vector of this document has {} non-zero weights; pgvector's sparsevec holds at most {}",
                pairs.len(),
                lr_vector::SPARSEVEC_MAX_NNZ
            ),
            Some(&format!(
                "Re-register model \"{name}\" with options {{\"sparse_top_k\": N}} (N <= {}) to keep each document's N largest weights.",
                lr_vector::SPARSEVEC_MAX_NNZ
            )),
        );
    }
    Some(to_sparsevec(info.vocab_size, pairs))
}

/// The sparse query side: raw counts of the query's token ids (no special tokens, at most
/// 512 tokens, as on the dense lookup path), each times its id's fitted weight when the model
/// has some (`weighting` 'auto'; 'counts' never weights, 'fitted' insists). No model weights
/// are read.
#[pg_extern(stable, parallel_safe)]
fn lr_encode_query_sparse(
    query: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    weighting: default!(Option<&str>, "'auto'"),
) -> Option<SparseVec> {
    let weighting = QueryWeighting::parse(crate::error::required(weighting, "weighting"));
    Some(encode_query_sparse(query?, model, weighting))
}

/// The sparse query encoding (shared by `lr_encode_query_sparse` and `lr_search`).
pub fn encode_query_sparse(query: &str, model: Option<&str>, weighting: QueryWeighting) -> SparseVec {
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    // Counts over a dense model's vocabulary would match nothing meaningful: say so.
    require_lm_head(&name, &info);
    // The adapter's tokenizer wins when a LoRA adapter ships one.
    let key = info.tokenizer_path().to_string_lossy().into_owned();
    let tokenizer = match TOKENIZERS.with(|m| m.borrow().get(&key).cloned()) {
        Some(t) => t,
        None => {
            let t = Rc::new(lr_tokenizer::QueryTokenizer::new(
                lr_tokenizer::load_tokenizer(Path::new(&key), None).or_raise(Code::ERRCODE_IO_ERROR),
            ));
            TOKENIZERS.with(|m| m.borrow_mut().insert(key, t.clone()));
            t
        }
    };
    // Cut before tokenizing: a huge query costs what its first MAX_QUERY_TOKENS ids cost.
    let ids = tokenizer.first_ids(query, MAX_QUERY_TOKENS).or_raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
    if ids.is_empty() {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: the query has no tokens",
            Some("Pass a query with at least one word."),
        );
    }
    let mut pairs = lr_tokenizer::counts_of(&ids);
    let weights = match weighting {
        QueryWeighting::Counts => None,
        QueryWeighting::Auto => fitted_weights(&name, &info),
        QueryWeighting::Fitted => Some(fitted_weights(&name, &info).unwrap_or_else(|| {
            raise(
                Code::ERRCODE_UNDEFINED_OBJECT,
                format!("lightretriever: sparse model \"{name}\" has no fitted query weights"),
                Some(&format!("Fit them (as a superuser): SELECT lightretriever.lr_fit_sparse_query_weights('{name}', source, text_column).")),
            )
        })),
    };
    if let Some(w) = weights {
        // Ids past the model's vocabulary cannot be in a document vector; to_sparsevec names them.
        pairs.iter_mut().for_each(|(id, c)| *c *= w.get(*id as usize).copied().unwrap_or(1.0));
    }
    to_sparsevec(info.vocab_size, pairs)
}

#[cfg(any(test, feature = "pg_test"))]
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
