//! Decoder LLMs through SQL: registration, dense and sparse documents, instruction tables and
//! LoRA adapters, on the tiny random models of `scripts/make_test_models.py`, checked against the
//! independent numpy reference (`tests/decoder_reference`).

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::pgvector::{SparseVec, Vector};
    use lr_testkit::{tiny_models_dir, tiny_reference};
    use pgrx::prelude::*;
    use serde_json::Value;

    fn register(name: &str, dir: &str, options: &str) {
        let path = tiny_models_dir().join(dir).to_string_lossy().into_owned();
        Spi::run_with_args(
            "SELECT lightretriever.lr_register_model($1, $2, $3::jsonb)",
            &[name.into(), path.into(), options.into()],
        )
        .unwrap();
    }

    /// A text that the tiny models' WordLevel tokenizer turns back into `ids` (content ids of a
    /// reference sequence, bos and eos stripped).
    fn text_of(model_dir: &str, ids: &[u32]) -> String {
        let tok = lr_tokenizer::load_tokenizer(&tiny_models_dir().join(model_dir).join("tokenizer.json"), None).unwrap();
        let words: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        let text = words.join(" ");
        assert_eq!(lr_tokenizer::plain_ids(&tok, &text).unwrap(), ids, "{text}");
        text
    }

    fn sequence(r: &Value, s: usize) -> Vec<u32> {
        r["sequences"][s].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        lr_testkit::assert_within(got, want, 1e-4, what);
    }

    #[pg_test]
    fn decoder_documents_dense_and_sparse_match_the_reference() {
        register("tq3", "tiny-qwen3", "{}");
        let row = Spi::get_three::<String, String, i32>(
            "SELECT family, pooling, max_length FROM lightretriever.lr_models WHERE name = 'tq3'",
        )
        .unwrap();
        assert_eq!(row, (Some("qwen3".into()), Some("last_token".into()), Some(512)));
        let r = tiny_reference("tiny-qwen3");
        for s in 1..5 {
            let seq = sequence(&r, s);
            let text = text_of("tiny-qwen3", &seq[1..seq.len() - 1]);
            let v = Spi::get_one_with_args::<Vector>("SELECT lightretriever.lr_encode_document($1, 'tq3')", &[text.as_str().into()])
                .unwrap()
                .unwrap();
            close(&v.0, &lr_testkit::floats(&r["pooled"][s]), &format!("pooled {s}"));
            let sp = Spi::get_one_with_args::<SparseVec>(
                "SELECT lightretriever.lr_encode_document_sparse($1, 'tq3')",
                &[text.as_str().into()],
            )
            .unwrap()
            .unwrap();
            let want = lr_testkit::id_weights(&r["sparse"][s]);
            assert_eq!(sp.0.indices.as_slice(), want.iter().map(|p| p.0).collect::<Vec<_>>().as_slice(), "sparse ids {s}");
            close(&sp.0.values, &want.iter().map(|p| p.1).collect::<Vec<_>>(), &format!("sparse {s}"));
        }
    }

    #[pg_test]
    fn instruction_tables_are_built_per_instruction_and_looked_up() {
        register("tl", "tiny-llama", "{}");
        let instruction = "given a search query , find the relevant passage";
        let rows = Spi::get_one_with_args::<i64>(
            "SELECT lightretriever.lr_build_query_table('tl', $1, dtype => 'f16')",
            &[instruction.into()],
        )
        .unwrap();
        assert_eq!(rows, Some(500));
        let (dtype, input) = Spi::get_two::<String, String>(
            "SELECT dtype, build->>'input' FROM lightretriever.lr_query_tables WHERE model = 'tl'",
        )
        .unwrap();
        assert_eq!(dtype.as_deref(), Some("f16"));
        assert!(input.unwrap().contains("Instruct: given a search query"));
        // No progress file is left behind.
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM lightretriever.lr_build_progress()").unwrap(), Some(0));

        // The lookup equals the model run on `[bos] Instruct: …\nQuery: {token}[eos]` (f16-rounded).
        let info = crate::catalog::load_model("tl");
        let enc = lr_encoders::LlmEncoder::load(&info, &lr_model::Device::Cpu).unwrap();
        let prefix = enc.query_prompt_prefix(instruction).unwrap();
        let tok = enc.tokenizer();
        let ids = lr_tokenizer::plain_ids(tok, "paris water").unwrap();
        let rows = enc.token_table_rows(&prefix, &ids).unwrap();
        let mut mean: Vec<f32> = (0..rows[0].len()).map(|d| rows.iter().map(|r| r[d]).sum::<f32>() / rows.len() as f32).collect();
        lr_model::pooling::l2_normalize(&mut mean);
        let q = Spi::get_one_with_args::<Vector>(
            "SELECT lightretriever.lr_encode_query('paris water', 'tl', $1)",
            &[instruction.into()],
        )
        .unwrap()
        .unwrap();
        let worst = q.0.iter().zip(&mean).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-3, "lookup vs model: {worst}");
    }

    #[pg_test(error = "lightretriever: model \"tl\" has no query table for instruction \"other task\"")]
    fn each_instruction_needs_its_own_table() {
        register("tl", "tiny-llama", "{}");
        Spi::run("SELECT lightretriever.lr_build_query_table('tl', 'one task')").unwrap();
        Spi::run("SELECT lightretriever.lr_encode_query('paris', 'tl', 'other task')").unwrap();
    }

    #[pg_test]
    fn a_lora_adapter_is_merged_and_its_tokenizer_wins() {
        let adapter = tiny_models_dir().join("tiny-llama-lora").to_string_lossy().into_owned();
        register("tl-lora", "tiny-llama", &serde_json::json!({"adapter": adapter}).to_string());
        let r = tiny_reference("tiny-llama+lora");
        let seq = sequence(&r, 3);
        // Content words are lowercase, so both tokenizers read them alike.
        let text = text_of("tiny-llama-lora", &seq[1..seq.len() - 1]);
        let v = Spi::get_one_with_args::<Vector>("SELECT lightretriever.lr_encode_document($1, 'tl-lora')", &[text.as_str().into()])
            .unwrap()
            .unwrap();
        close(&v.0, &lr_testkit::floats(&r["pooled"][3]), "lora pooled");
        // The lowercasing tokenizer: capitalised text encodes like its lowercase form.
        let same = Spi::get_one::<bool>(
            "SELECT lightretriever.lr_encode_query_sparse('The Capital of France', 'tl-lora')::text
                  = lightretriever.lr_encode_query_sparse('the capital of france', 'tl-lora')::text",
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    #[pg_test]
    fn a_decoder_sparse_model_takes_fitted_query_weights() {
        register("tq2w", "tiny-qwen2", "{}");
        Spi::run(
            "CREATE TABLE tq_docs (id int PRIMARY KEY, body text);
             INSERT INTO tq_docs VALUES (1, 'the capital of france'), (2, 'the water'), (3, 'paris')",
        )
        .unwrap();
        let report = Spi::get_one::<pgrx::JsonB>("SELECT lightretriever.lr_fit_sparse_query_weights('tq2w', 'tq_docs', 'body')")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!((report["vocab"].as_u64(), report["documents"].as_u64()), (Some(500), Some(3)));
        let query = |weighting: &str| {
            let q = Spi::get_one_with_args::<SparseVec>(
                "SELECT lightretriever.lr_encode_query_sparse('the the capital', 'tq2w', $1)",
                &[weighting.into()],
            )
            .unwrap()
            .unwrap()
            .0;
            (q.indices, q.values)
        };
        let (ids, counts) = query("counts");
        let (weighted_ids, weighted) = query("auto");
        assert_eq!(ids, weighted_ids);
        // N = 3: "the" in 2 documents, "capital" in 1.
        let idf = |df: f64| (1.0 + (3.0 - df + 0.5) / (df + 0.5)).ln() as f32;
        for ((c, w), id) in counts.iter().zip(&weighted).zip(&ids) {
            let want = if *c == 2.0 { 2.0 * idf(2.0) } else { idf(1.0) };
            assert!((w - want).abs() < 1e-6, "id {id}: {w} vs {want}");
        }
        assert_eq!(counts.iter().filter(|&&c| c == 2.0).count(), 1, "\"the\" twice: {counts:?}");
    }

    #[pg_test]
    fn a_model_registered_again_and_rebuilt_is_not_served_its_old_table() {
        let query = |model: &str| {
            Spi::get_one_with_args::<Vector>("SELECT lightretriever.lr_encode_query('paris water', $1)", &[model.into()])
                .unwrap()
                .unwrap()
                .0
        };
        register("tq", "tiny-qwen2", "{}");
        Spi::run("SELECT lightretriever.lr_build_query_table('tq')").unwrap();
        let old = query("tq");
        // The same name for another model, dropped and built again in one transaction: version 1
        // again, and the drop's commit-time file cleanup must not take the new file.
        let first_file = Spi::get_one::<String>("SELECT file FROM lightretriever.lr_query_tables WHERE model = 'tq'").unwrap();
        Spi::run("SELECT lightretriever.lr_drop_model('tq')").unwrap();
        register("tq", "tiny-llama", "{}");
        Spi::run("SELECT lightretriever.lr_build_query_table('tq')").unwrap();
        register("tl-fresh", "tiny-llama", "{}");
        Spi::run("SELECT lightretriever.lr_build_query_table('tl-fresh')").unwrap();
        let second_file = Spi::get_one::<String>("SELECT file FROM lightretriever.lr_query_tables WHERE model = 'tq'").unwrap();
        assert_ne!(first_file, second_file, "every build has its own file name");
        let new = query("tq");
        assert_ne!(new, old);
        assert_eq!(new, query("tl-fresh"));
    }

    #[cfg(not(feature = "cuda"))]
    #[pg_test(error = "lightretriever: invalid model option: this build has no CUDA support: rebuild lightretriever with the cargo feature \"cuda\"")]
    fn cuda_without_the_feature_is_a_clear_error() {
        register("tq2", "tiny-qwen2", "{}");
        Spi::run("SET LOCAL lightretriever.device = 'cuda:0'").unwrap();
        Spi::run("SELECT lightretriever.lr_encode_document('the water', 'tq2')").unwrap();
    }

    #[pg_test(error = "lightretriever: invalid model option: pooling \"mean\": decoder LLMs are pooled at their last (eos) token")]
    fn decoders_refuse_other_poolings() {
        register("tm", "tiny-mistral", r#"{"pooling": "mean"}"#);
    }

    /// An auto-encoded table names its own vector column and model for `lr_search` (here
    /// beside a second `vector` column that would otherwise make the choice ambiguous).
    #[pg_test]
    fn an_auto_encoded_table_is_searched_without_naming_columns() {
        register("tq3", "tiny-qwen3", "{}");
        Spi::run("SELECT lightretriever.lr_build_query_table('tq3')").unwrap();
        let r = tiny_reference("tiny-qwen3");
        let (a, b) = (sequence(&r, 1), sequence(&r, 2));
        let (a, b) = (text_of("tiny-qwen3", &a[1..a.len() - 1]), text_of("tiny-qwen3", &b[1..b.len() - 1]));
        let dim = Spi::get_one::<i32>("SELECT hidden_size FROM lightretriever.lr_models WHERE name = 'tq3'").unwrap().unwrap();
        Spi::run(&format!("CREATE TABLE s_docs (id bigint PRIMARY KEY, body text, other vector({dim}))")).unwrap();
        Spi::run_with_args("INSERT INTO s_docs (id, body) VALUES (1, $1), (2, $2)", &[a.as_str().into(), b.as_str().into()]).unwrap();
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('s_docs', 'body', 'tq3')").unwrap();
        // No worker in this server: write the vectors as it would.
        Spi::run("UPDATE s_docs SET body_embedding = lightretriever.lr_encode_document(body, 'tq3')").unwrap();
        let hits: Vec<i64> = Spi::connect(|c| {
            c.select("SELECT id FROM lightretriever.lr_search('s_docs', $1, k => 2, mode => 'dense')", None, &[a.as_str().into()])
                .unwrap()
                .map(|r| r.get::<i64>(1).unwrap().unwrap())
                .collect()
        });
        let want: Vec<i64> = Spi::connect(|c| {
            c.select(
                "SELECT id FROM s_docs ORDER BY body_embedding <#> lightretriever.lr_encode_query($1, 'tq3'), id",
                None,
                &[a.as_str().into()],
            )
            .unwrap()
            .map(|r| r.get::<i64>(1).unwrap().unwrap())
            .collect()
        });
        assert_eq!(hits, want);
    }
}
