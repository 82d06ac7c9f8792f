//! The rerank path through SQL (models in the test backend: `allow_backend_models`), on the tiny
//! random PE-Rank checkpoint, against the independent numpy reference
//! (tests/rerank_reference): the same permutation and scores as the reference's decoding.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use lr_testkit::{floats, indices, matrix, tiny_models_dir, tiny_reference};
    use pgrx::prelude::*;
    use serde_json::Value;

    use crate::pgvector::Vector;
    use crate::test_support::*;

    const RERANKER: &str = "perank";

    fn register_reranker(options: &str) {
        let path = tiny_models_dir().join("pe-rank-tiny").to_string_lossy().into_owned();
        Spi::run_with_args(
            "SELECT lightretriever.lr_register_model($1, $2, $3::jsonb)",
            &[RERANKER.into(), path.into(), options.into()],
        )
        .unwrap();
    }




    /// The reference's single-window case in embedding mode with `n` candidates (the first query).
    fn case(n: usize) -> Value {
        tiny_reference("pe-rank-tiny")["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["mode"] == "embedding" && c["embeddings"].as_array().unwrap().len() == n)
            .unwrap()
            .clone()
    }

    fn sliding(n: usize) -> Value {
        tiny_reference("pe-rank-tiny")["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["embeddings"].as_array().unwrap().len() == n)
            .unwrap()
            .clone()
    }

    /// (rank, idx or id, score) rows of a rerank call.
    fn rows(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<(i32, i64, f32)> {
        Spi::connect(|c| {
            c.select(sql, None, args)
                .unwrap()
                .map(|r| (r.get::<i32>(1).unwrap().unwrap(), r.get::<i64>(2).unwrap().unwrap(), r.get::<f32>(3).unwrap().unwrap()))
                .collect()
        })
    }

    fn vectors(embeddings: &[Vec<f32>]) -> Vec<Option<Vector>> {
        embeddings.iter().map(|e| Some(Vector(e.clone()))).collect()
    }

    /// Rows against the reference: the order (0-based candidates best first) and each pick's score.
    fn assert_reference(got: &[(i32, i64, f32)], order: &[usize], score_of: impl Fn(usize) -> f32, to_key: impl Fn(usize) -> i64) {
        let scale = (0..order.len()).map(|i| score_of(i).abs()).fold(1e-6f32, f32::max);
        assert_eq!(got.len(), order.len());
        for (k, (&(rank, key, score), &want)) in got.iter().zip(order).enumerate() {
            assert_eq!(rank, k as i32 + 1);
            assert_eq!(key, to_key(want), "rank {}: {got:?} vs {order:?}", k + 1);
            assert!((score - score_of(want)).abs() <= 5e-5 * scale, "rank {}: score {score} vs {}", k + 1, score_of(want));
        }
    }

    #[pg_test]
    fn a_pe_rank_checkpoint_registers_as_a_reranker() {
        register_reranker("{}");
        let row = Spi::get_two::<String, String>("SELECT family, architecture FROM lightretriever.lr_models WHERE name = 'perank'").unwrap();
        assert_eq!(row, (Some("reranker".into()), Some("EmbedMistralForRankLM".into())));
        let size = Spi::get_one::<i64>("SELECT (info->>'embedding_size')::int8 FROM lightretriever.lr_models WHERE name = 'perank'").unwrap();
        assert_eq!(size, Some(32));
    }

    #[pg_test]
    fn the_encoder_must_exist_and_match_the_embedding_size() {
        register_dense_model();
        let path = tiny_models_dir().join("pe-rank-tiny").to_string_lossy().into_owned();
        assert_eq!(
            error_of(&format!("SELECT lightretriever.lr_register_model('r1', '{path}', '{{\"encoder\": \"minilm\"}}')")),
            "lightretriever: encoder \"minilm\" gives 384-dimensional vectors; this reranker's embedding_size is 32"
        );
        assert_eq!(
            error_of(&format!("SELECT lightretriever.lr_register_model('r2', '{path}', '{{\"encoder\": \"nope\"}}')")),
            "lightretriever: model \"nope\" is not registered"
        );
        assert_eq!(
            error_of(&format!("SELECT lightretriever.lr_register_model('m3', '{}', '{{\"encoder\": \"minilm\"}}')", dense_model_dir())),
            "lightretriever: invalid model option: the encoder option is for rerankers (PE-Rank checkpoints) only"
        );
    }

    #[pg_test]
    fn embeddings_rerank_as_the_reference_decodes() {
        register_reranker("{}");
        for n in [2, 5, 20] {
            let c = case(n);
            let got = rows(
                "SELECT rank, idx::int8, score FROM lightretriever.lr_rerank_embeddings($1, $2, 'perank')",
                &[c["query"].as_str().unwrap().into(), vectors(&matrix(&c["embeddings"])).into()],
            );
            let order = indices(&c["permutation"]);
            let scores = floats(&c["scores"]);
            let score_of = |i: usize| scores[order.iter().position(|&o| o == i).unwrap()];
            assert_reference(&got, &order, score_of, |i| i as i64 + 1);
        }
        // 30 candidates: windows [10,30) then [0,20), as the public evaluation loop runs them.
        let s = sliding(30);
        Spi::run("SET LOCAL lightretriever.default_reranker = 'perank'").unwrap();
        let got = rows(
            "SELECT rank, idx::int8, score FROM lightretriever.lr_rerank_embeddings($1, $2)",
            &[s["query"].as_str().unwrap().into(), vectors(&matrix(&s["embeddings"])).into()],
        );
        let scores = floats(&s["scores"]);
        assert_reference(&got, &indices(&s["order"]), |i| scores[i], |i| i as i64 + 1);
    }

    #[pg_test]
    fn rows_of_a_table_rerank_by_id_with_their_stored_vectors() {
        register_reranker("{}");
        let c = case(5);
        Spi::run("CREATE TABLE passages (pid bigint PRIMARY KEY, body text, emb vector(32), other vector(3))").unwrap();
        let embeddings = matrix(&c["embeddings"]);
        // Ids in first-stage order 50, 40, …, 10: candidate i is id 50 − 10·i.
        for (i, e) in embeddings.iter().enumerate() {
            Spi::run_with_args(
                "INSERT INTO passages VALUES ($1, 'passage ' || $1, $2, '[1,2,3]')",
                &[(50 - 10 * i as i64).into(), Vector(e.clone()).into()],
            )
            .unwrap();
        }
        let got = rows(
            "SELECT rank, id, score FROM lightretriever.lr_rerank($1, ARRAY[50, 40, 30, 20, 10], 'passages', 'perank')",
            &[c["query"].as_str().unwrap().into()],
        );
        let order = indices(&c["permutation"]);
        let scores = floats(&c["scores"]);
        let score_of = |i: usize| scores[order.iter().position(|&o| o == i).unwrap()];
        assert_reference(&got, &order, score_of, |i| 50 - 10 * i as i64);

        let q = "SELECT count(*) FROM lightretriever.lr_rerank('q', ARRAY";
        assert_eq!(
            error_of(&format!("{q}[50, 40, 50], 'passages', 'perank')")),
            "lightretriever: id 50 is given twice (ids[1] and ids[3])"
        );
        assert_eq!(
            error_of(&format!("{q}[50, 41, 42], 'passages', 'perank')")),
            "lightretriever: 2 of the ids are not in public.passages (or not visible): 41, 42"
        );
        assert_eq!(error_of(&format!("{q}[50, NULL], 'passages', 'perank')")), "lightretriever: ids[2] is NULL");
        assert_eq!(error_of(&format!("{q}[]::int8[], 'passages', 'perank')")), "lightretriever: ids is empty: nothing to rerank");
        assert_eq!(
            error_of(&format!("{q}[50], 'passages', 'perank', embedding_column => 'other')")),
            "lightretriever: the embedding of id 50 has 3 dimensions; reranker \"perank\" takes passage embeddings of 32"
        );
        assert_eq!(
            error_of(&format!("{q}[50], 'passages', 'perank', mode => 'text', text_column => 'emb')")),
            "lightretriever: column \"emb\" of public.passages is public.vector(32), not text"
        );
        // Text mode reads the passages' text: it runs, and places every candidate once.
        let text = rows(
            "SELECT rank, id, score FROM lightretriever.lr_rerank('q', ARRAY[50, 40, 30], 'passages', 'perank', text_column => 'body', mode => 'text')",
            &[],
        );
        let mut ids: Vec<i64> = text.iter().map(|r| r.1).collect();
        ids.sort();
        assert_eq!(ids, [30, 40, 50]);
        assert_eq!(
            error_of(&format!("{q}[50], 'passages', 'perank', mode => 'text')")),
            "lightretriever: text mode needs the passages' text, and public.passages is not auto-encoded"
        );
    }

    /// Reranking is for every role that may read the rows (SECURITY INVOKER): an ordinary role
    /// reranks given vectors and its own table's rows, and may not lock the catalog's models
    /// (which would let it stall a superuser's lr_drop_model).
    #[pg_test]
    fn an_ordinary_role_reranks() {
        register_reranker("{}");
        let c = case(5);
        let order = indices(&c["permutation"]);
        let scores = floats(&c["scores"]);
        let score_of = |i: usize| scores[order.iter().position(|&o| o == i).unwrap()];
        Spi::run(
            "CREATE ROLE lr_reader;
             CREATE TABLE reader_passages (pid bigint PRIMARY KEY, emb vector(32));
             GRANT SELECT ON reader_passages TO lr_reader;
             SET ROLE lr_reader",
        )
        .unwrap();
        let got = rows(
            "SELECT rank, idx::int8, score FROM lightretriever.lr_rerank_embeddings($1, $2, 'perank')",
            &[c["query"].as_str().unwrap().into(), vectors(&matrix(&c["embeddings"])).into()],
        );
        assert_reference(&got, &order, score_of, |i| i as i64 + 1);
        Spi::run("RESET ROLE").unwrap();
        for (i, e) in matrix(&c["embeddings"]).iter().enumerate() {
            Spi::run_with_args("INSERT INTO reader_passages VALUES ($1, $2)", &[(i as i64 + 1).into(), Vector(e.clone()).into()]).unwrap();
        }
        Spi::run("SET ROLE lr_reader").unwrap();
        let got = rows("SELECT rank, id, score FROM lightretriever.lr_rerank($1, ARRAY[1, 2, 3, 4, 5], 'reader_passages', 'perank')", &[c["query"].as_str().unwrap().into()]);
        assert_reference(&got, &order, score_of, |i| i as i64 + 1);
        assert_eq!(
            error_of("SELECT 1 FROM lightretriever.lr_models FOR KEY SHARE"),
            "permission denied for table lr_models"
        );
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn wrong_arguments_are_errors() {
        register_dense_model();
        register_reranker("{\"max_length\": 120}");
        let one = "ARRAY[array_fill(0.1, ARRAY[32])::vector]";
        let call = |args: &str| error_of(&format!("SELECT count(*) FROM lightretriever.lr_rerank_embeddings({args})"));
        assert_eq!(call("'q', ARRAY[]::vector[], 'perank'"), "lightretriever: embeddings is empty: nothing to rerank");
        assert_eq!(call(&format!("'q', {one} || NULL::vector, 'perank'")), "lightretriever: embeddings[2] is NULL");
        assert_eq!(
            call("'q', ARRAY['[1,2,3]'::vector], 'perank'"),
            "lightretriever: embeddings[1] has 3 dimensions; reranker \"perank\" takes passage embeddings of 32"
        );
        assert_eq!(
            call(&format!("'q', {one}, 'minilm'")),
            "lightretriever: model \"minilm\" is not a reranker (its family is bert)"
        );
        assert_eq!(call(&format!("'q', {one}, 'perank', window_size => 1")), "lightretriever: window_size must be at least 2 (it is 1)");
        assert_eq!(call(&format!("'q', {one}, 'perank', window_size => -3")), "lightretriever: window_size must be at least 2 (it is -3)");
        assert_eq!(
            call(&format!("repeat('long ', 2000), {one}, 'perank'")),
            "lightretriever: the query takes 20000 bytes in the prompt; a context of 120 tokens holds at most 7680"
        );
        // Embeddings of absurd magnitude overflow the projector: an error, not a ranking of NaNs.
        let e = call("'q', ARRAY[array_fill(3e37::real, ARRAY[32])::vector, array_fill(-3e37::real, ARRAY[32])::vector], 'perank'");
        assert!(e.contains("the decoding scores are not finite"), "{e}");
        assert_eq!(call(&format!("'q', {one}, 'perank', step => 0")), "lightretriever: step must be at least 1 (it is 0)");
        assert_eq!(call(&format!("'q', {one}, 'perank', mode => 'list'")), "lightretriever: unknown rerank mode \"list\" (expected embedding or text)");
        assert!(call(&format!("'q', {one}, 'perank', mode => 'text'")).starts_with("lightretriever: text mode needs the passages' texts"));
        assert_eq!(call(&format!("NULL, {one}, 'perank'")), "lightretriever: argument \"query\" must not be NULL");
        assert_eq!(call(&format!("'q', {one}")), "lightretriever: no model given and lightretriever.default_reranker is not set");
        // max_length 120 holds the prompt for a few candidates, not for a window of 20.
        let twenty = format!("(SELECT array_agg(v) FROM (SELECT array_fill(0.1 * i, ARRAY[32])::vector AS v FROM generate_series(1, 20) i) s)");
        let e = call(&format!("'q', {twenty}, 'perank'"));
        assert!(e.contains("20 candidates need") && e.contains("the model allows 120: use a smaller window"), "{e}");
        assert_eq!(
            error_of("SELECT lightretriever.lr_encode_document('x', 'perank')").split(": invalid model:").next(),
            Some("lightretriever: cannot load model \"perank\"")
        );
    }

    /// (id, embedding) rows of `lr_encode_documents(texts, model)`, in order.
    fn encode_documents(texts: &[&str], model: &str) -> Vec<Vec<f32>> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        Spi::connect(|c| {
            c.select(
                "SELECT v FROM lightretriever.lr_encode_documents($1, $2) WITH ORDINALITY AS t(v, n) ORDER BY n",
                None,
                &[texts.into(), model.into()],
            )
            .unwrap()
            .map(|r| r.get::<Vector>(1).unwrap().unwrap().0)
            .collect()
        })
    }

    /// The same ids in the same order, scores equal up to the float noise of encoding a text
    /// alone or in a batch.
    fn assert_same(got: &[(i32, i64, f32)], want: &[(i32, i64, f32)]) {
        assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), want.iter().map(|r| r.1).collect::<Vec<_>>(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g.2 - w.2).abs() <= 1e-4 * w.2.abs().max(1.0), "{got:?} vs {want:?}");
        }
    }

    #[pg_test]
    fn passages_are_encoded_by_the_encoder_unless_its_vectors_are_stored() {
        let jina = tiny_models_dir().join("jina-bert-tiny").to_string_lossy().into_owned();
        Spi::run_with_args("SELECT lightretriever.lr_register_model('jina', $1)", &[jina.into()]).unwrap();
        register_reranker("{\"encoder\": \"jina\"}");
        register_dense_model();
        // The encoder of a reranker stays registered while the reranker is.
        assert_eq!(
            error_of("SELECT lightretriever.lr_drop_model('jina')"),
            "lightretriever: model \"jina\" is the passage encoder of reranker perank"
        );
        // Texts the tiny WordPiece vocabulary tells apart (the reference's).
        let reference = tiny_reference("jina-bert-tiny");
        let texts: Vec<&str> = reference["texts"].as_array().unwrap().iter().take(4).map(|t| t.as_str().unwrap()).collect();
        Spi::run("CREATE TABLE docs (id bigint PRIMARY KEY, body text, mini vector(384))").unwrap();
        for (i, t) in texts.iter().enumerate() {
            Spi::run_with_args(
                "INSERT INTO docs VALUES ($1, $2, lightretriever.lr_encode_document($2, 'minilm'))",
                &[(i as i64 + 1).into(), (*t).into()],
            )
            .unwrap();
        }
        let by_embeddings = |vectors: &[Vec<f32>]| -> Vec<(i32, i64, f32)> {
            rows(
                "SELECT rank, idx::int8, score FROM lightretriever.lr_rerank_embeddings('river books', $1, 'perank')",
                &[vectors.iter().map(|v| Some(Vector(v.clone()))).collect::<Vec<_>>().into()],
            )
        };
        let by_ids = || rows("SELECT rank, id, score FROM lightretriever.lr_rerank('river books', ARRAY[1, 2, 3, 4], 'docs', 'perank')", &[]);
        // The table's vectors come from another model (384 dimensions): the passages are encoded
        // by the reranker's encoder, from the text column the call names.
        let encoded = encode_documents(&texts, "jina");
        let want = by_embeddings(&encoded);
        let got = rows(
            "SELECT rank, id, score FROM lightretriever.lr_rerank('river books', ARRAY[1, 2, 3, 4], 'docs', 'perank', text_column => 'body')",
            &[],
        );
        assert_same(&got, &want);
        // Auto-encoded by the encoder: its stored column is read as it is, nothing re-encoded (the
        // stored vectors here are deliberately other than the encoder's, to tell them apart).
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'jina')").unwrap();
        // (e_i + e_{i+1}) / 2: unlike any encoder output, so that no two candidates tie below.
        let stored: Vec<Vec<f32>> = (0..texts.len())
            .map(|i| encoded[i].iter().zip(&encoded[(i + 1) % texts.len()]).map(|(a, b)| (a + b) / 2.0).collect())
            .collect();
        for (i, v) in stored.iter().enumerate() {
            Spi::run_with_args("UPDATE docs SET body_embedding = $2 WHERE id = $1", &[(i as i64 + 1).into(), Vector(v.clone()).into()]).unwrap();
        }
        let want = by_embeddings(&stored);
        assert_same(&by_ids(), &want);
        // A stored NULL (not encoded yet) is encoded from the row's text.
        Spi::run("UPDATE docs SET body_embedding = NULL WHERE id = 2").unwrap();
        let mut mixed = stored.clone();
        mixed[1] = encoded[1].clone();
        let want = by_embeddings(&mixed);
        assert_same(&by_ids(), &want);
        // Text columns are text, varchar or char, not arrays of them.
        Spi::run("ALTER TABLE docs ADD COLUMN tags varchar[]").unwrap();
        assert_eq!(
            error_of("SELECT count(*) FROM lightretriever.lr_rerank('q', ARRAY[1], 'docs', 'perank', text_column => 'tags')"),
            "lightretriever: column \"tags\" of public.docs is character varying[], not text"
        );
        // No source: the one auto-encoded table.
        let got = rows("SELECT rank, id, score FROM lightretriever.lr_rerank('river books', ARRAY[1, 2, 3, 4], model => 'perank')", &[]);
        assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), want.iter().map(|r| r.1).collect::<Vec<_>>());
    }
}
