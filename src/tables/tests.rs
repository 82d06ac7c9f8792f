//! Builds, fits and lookups of query tables, and the sparse query side, in PostgreSQL.
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::pgvector::Vector;
    use crate::test_support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn built_table_matches_reference_and_serves_hnsw_search() {
        register_dense_model();
        let rows = Spi::get_one::<i64>("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        assert_eq!(rows, Some(30522));
        let meta = Spi::get_three::<i32, i32, String>(
            "SELECT version, dims, method FROM lightretriever.lr_query_tables WHERE model = 'minilm'",
        )
        .unwrap();
        assert_eq!(meta, (Some(1), Some(384), Some("token_forward".into())));

        let r = reference();
        for q in r["lookup_queries"].as_array().unwrap() {
            let text = q["text"].as_str().unwrap();
            if q["embedding"].is_null() {
                continue; // no tokens: an error, tested on its own (tests/e2e)
            }
            let v = Spi::get_one_with_args::<Vector>("SELECT lightretriever.lr_encode_query($1, 'minilm')", &[text.into()])
                .unwrap()
                .unwrap();
            assert_matches(&v.0, &floats(&q["embedding"]), text);
        }
        // A run of over 4 MiB with no place to cut is refused with an ERROR before it reaches the
        // tokenizer (≈ 55× a text in memory: an allocation failure aborted the backend and
        // restarted the server).
        let message = error_of("SELECT lightretriever.lr_encode_query(repeat('é', 2200000), 'minilm')");
        assert!(message.contains("too long to tokenize"), "{message}");

        // ORDER BY <#> lr_encode_query(...) LIMIT k is answered by an HNSW index.
        Spi::run("CREATE TEMP TABLE docs (id int PRIMARY KEY, body text, emb vector(384))").unwrap();
        for (i, s) in r["sentences"].as_array().unwrap().iter().enumerate() {
            Spi::run_with_args(
                "INSERT INTO docs VALUES ($1, $2, lightretriever.lr_encode_document($2, 'minilm'))",
                &[(i as i32).into(), s["text"].as_str().unwrap().into()],
            )
            .unwrap();
        }
        Spi::run("CREATE INDEX docs_emb_hnsw ON docs USING hnsw (emb vector_ip_ops)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        let search = "SELECT id FROM docs ORDER BY emb <#> lightretriever.lr_encode_query('a man eating food', 'minilm') LIMIT 3";
        let plan = Spi::explain(search).unwrap().0.to_string();
        assert!(plan.contains("Index Scan") && plan.contains("docs_emb_hnsw"), "{plan}");
        let by_index: Vec<i32> = Spi::connect(|c| {
            c.select(search, None, &[]).unwrap().map(|r| r.get::<i32>(1).unwrap().unwrap()).collect()
        });
        Spi::run("SET LOCAL enable_indexscan = off").unwrap();
        Spi::run("SET LOCAL enable_seqscan = on").unwrap();
        let exact: Vec<i32> = Spi::connect(|c| {
            c.select(search, None, &[]).unwrap().map(|r| r.get::<i32>(1).unwrap().unwrap()).collect()
        });
        assert_eq!(by_index, exact);
        assert_eq!(exact.len(), 3);
    }

    /// Fitting on a small corpus writes version 2 (method fit, with weights), reduces its own
    /// loss, and the lookup then serves the fitted table; a failing fit leaves the
    /// catalog, the files and the served table as they were.
    #[pg_test]
    fn fitting_writes_a_new_version_and_lowers_its_loss() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("CREATE TEMP TABLE corpus (id int PRIMARY KEY, body text)").unwrap();
        let r = reference();
        let sentences: Vec<String> = r["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_owned()).collect();
        for i in 0..60 {
            let text = format!("{} {}", sentences[i % sentences.len()], sentences[(i * 7 + 3) % sentences.len()]);
            Spi::run_with_args("INSERT INTO corpus VALUES ($1, $2)", &[(i as i32).into(), text.into()]).unwrap();
        }
        let before = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('a man eating food', 'minilm')").unwrap().unwrap();
        let report = Spi::get_one::<pgrx::JsonB>(
            r#"SELECT lightretriever.lr_fit_query_table('minilm', 'corpus', 'body', options => '{"spans_per_doc": 4}')"#,
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(report["version"], 2, "{report}");
        let (b, a) = (report["loss_train_before"].as_f64().unwrap(), report["loss_train_after"].as_f64().unwrap());
        assert!(a < b, "loss {b} → {a}");
        let method = Spi::get_one::<String>(
            "SELECT method FROM lightretriever.lr_query_tables WHERE model = 'minilm' ORDER BY version DESC LIMIT 1",
        )
        .unwrap();
        assert_eq!(method.as_deref(), Some("fit"));
        Spi::run("SELECT 1").unwrap(); // a new statement: the lookup memo does not apply
        let after = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('a man eating food', 'minilm')").unwrap().unwrap();
        assert!(before.0.iter().zip(&after.0).any(|(x, y)| (x - y).abs() > 1e-3), "the fitted table is used");
        // A failing fit changes nothing: the same versions and files, version 2 still served.
        let catalog = "SELECT pg_catalog.string_agg(version || ' ' || method || ' ' || file, ', ' ORDER BY version)
                         FROM lightretriever.lr_query_tables WHERE model = 'minilm'";
        let files = "SELECT pg_catalog.string_agg(f, ', ' ORDER BY f) FROM pg_catalog.pg_ls_dir('lightretriever/tables') f";
        let (catalog_before, files_before) = (Spi::get_one::<String>(catalog).unwrap(), Spi::get_one::<String>(files).unwrap());
        let message = error_of(r#"SELECT lightretriever.lr_fit_query_table('minilm', 'corpus', 'body', options => '{"no_such_option": 1}')"#);
        assert!(message.contains("no_such_option"), "{message}");
        assert_eq!(Spi::get_one::<String>(catalog).unwrap(), catalog_before);
        assert_eq!(Spi::get_one::<String>(files).unwrap(), files_before);
        let again = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('a man eating food', 'minilm')").unwrap().unwrap();
        assert_eq!(again.0, after.0, "the fitted version 2 is still the one served");
    }

    /// A fit's columns are checked by type oid: a type in the caller's `pg_temp` named `vector`
    /// prints as `vector` (pgvector's schema is not on the fit's path) but is not pgvector's.
    #[pg_test]
    fn a_fit_takes_pgvectors_vector_not_a_type_of_that_name() {
        register_dense_model();
        Spi::run(
            "CREATE TYPE pg_temp.vector AS (x int);
             CREATE TEMP TABLE corpus (id int PRIMARY KEY, body text, emb pg_temp.vector);
             INSERT INTO corpus VALUES (1, 'a man eating food', ROW(1))",
        )
        .unwrap();
        let message = error_of("SELECT lightretriever.lr_fit_query_table('minilm', 'corpus', 'body', vector_column => 'emb')");
        assert!(message.contains("column \"emb\" of corpus is pg_temp_") && message.contains(".vector, not vector"), "{message}");
    }

    #[pg_test(error = "lightretriever: model \"minilm\" has no query table")]
    fn missing_table_names_the_builder() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_encode_query('anything', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: model \"minilm\" is a BERT-family encoder, which takes no instruction")]
    fn bert_tables_take_no_instruction() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm', 'Given a query')").unwrap();
    }

    /// A new statement for the lookup path: its per-statement memo and file check start again.
    fn next_statement() {
        Spi::run("CREATE TEMP TABLE IF NOT EXISTS lr_statements (); INSERT INTO lr_statements DEFAULT VALUES").unwrap();
    }

    fn tiny_qwen(name: &str) {
        let path = lr_testkit::tiny_models_dir().join("tiny-qwen2").to_string_lossy().into_owned();
        Spi::run_with_args("SELECT lightretriever.lr_register_model($1, $2)", &[name.into(), path.into()]).unwrap();
    }

    /// A table's bytes are stored in the database, in order; this server's file is their cache:
    /// removed, damaged or replaced by another table, it is written again, byte for byte, and
    /// lookups give the same vectors.
    #[pg_test]
    fn table_bytes_live_in_the_database_and_the_file_is_their_cache() {
        tiny_qwen("tq");
        tiny_qwen("tq-twin");
        Spi::run("SELECT lightretriever.lr_build_query_table('tq'); SELECT lightretriever.lr_build_query_table('tq-twin')").unwrap();
        let file_of = |model: &str| {
            Spi::get_one_with_args::<String>("SELECT file FROM lightretriever.lr_query_tables WHERE model = $1", &[model.into()])
                .unwrap()
                .unwrap()
        };
        let file = file_of("tq");
        let checksum = Spi::get_one::<String>("SELECT checksum FROM lightretriever.lr_query_tables WHERE model = 'tq'").unwrap().unwrap();
        let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
        assert!(file.starts_with(&format!("lightretriever/tables/db{database}-tq-")) && file.ends_with(&format!("-v1-{checksum}.lrt")), "{file}");
        let pristine = std::fs::read(&file).unwrap();
        let stored = Spi::get_one::<Vec<u8>>(
            "SELECT string_agg(data, ''::bytea ORDER BY chunk) FROM lightretriever.lr_query_table_chunks WHERE model = 'tq'",
        )
        .unwrap()
        .unwrap();
        assert!(stored == pristine, "the stored chunks are not the file ({} and {} bytes)", stored.len(), pristine.len());
        let chunks = Spi::get_one::<i64>("SELECT count(*) FROM lightretriever.lr_query_table_chunks WHERE model = 'tq'").unwrap().unwrap();
        assert_eq!(chunks as usize, pristine.len().div_ceil(lr_table::cache::CHUNK_BYTES));

        let query = "SELECT lightretriever.lr_encode_query('paris water', 'tq')";
        let good = Spi::get_one::<Vector>(query).unwrap().unwrap();
        let damages: [(&str, &dyn Fn()); 4] = [
            ("removed", &|| std::fs::remove_file(&file).unwrap()),
            ("truncated while mapped", &|| std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(4096).unwrap()),
            ("a byte flipped", &|| {
                let mut bytes = pristine.clone();
                let n = bytes.len();
                bytes[n - 3] ^= 0x40;
                std::fs::write(&file, bytes).unwrap();
            }),
            ("another model's table copied over it", &|| {
                std::fs::copy(file_of("tq-twin"), &file).unwrap();
            }),
        ];
        for (damage, apply) in damages {
            std::thread::sleep(std::time::Duration::from_millis(20)); // past the coarse clock's tick
            apply();
            next_statement();
            let again = Spi::get_one::<Vector>(query).unwrap().unwrap();
            assert_eq!(again.0, good.0, "{damage}: other vectors");
            assert!(std::fs::read(&file).unwrap() == pristine, "{damage}: the file was not written again as it was");
        }
    }

    /// A version with no stored bytes (built before 0.6.0) works from its file while it lasts;
    /// without the file it is an error that says what to do, and lr_store_query_tables stores it
    /// from the file. Stored bytes that are not the table are an error, never wrong vectors.
    #[pg_test]
    fn unstored_and_damaged_stored_tables_are_errors_with_a_way_out() {
        tiny_qwen("tq");
        Spi::run("SELECT lightretriever.lr_build_query_table('tq')").unwrap();
        let file = Spi::get_one::<String>("SELECT file FROM lightretriever.lr_query_tables").unwrap().unwrap();
        let pristine = std::fs::read(&file).unwrap();
        let query = "SELECT lightretriever.lr_encode_query('paris water', 'tq')";
        let good = Spi::get_one::<Vector>(query).unwrap().unwrap();

        Spi::run("DELETE FROM lightretriever.lr_query_table_chunks").unwrap();
        next_statement();
        assert_eq!(Spi::get_one::<Vector>(query).unwrap().unwrap().0, good.0, "served from its file");
        std::fs::remove_file(&file).unwrap();
        next_statement();
        let message = error_of(query);
        assert!(message.contains(&format!("query table file {file} is missing")) && message.contains("has no stored bytes"), "{message}");

        // A file as 0.5.0 named it (the row names it): served as it is — the library serves
        // 0.5.0's SQL until the update — and stored by lr_store_query_tables.
        let old_name = format!("{file}.old");
        std::fs::write(&old_name, &pristine).unwrap();
        Spi::run_with_args("UPDATE lightretriever.lr_query_tables SET file = $1", &[old_name.as_str().into()]).unwrap();
        next_statement();
        assert_eq!(Spi::get_one::<Vector>(query).unwrap().unwrap().0, good.0, "served from the file the row names");
        assert!(!std::path::Path::new(&file).exists(), "nothing written: there was nothing to write it from");
        assert_eq!(Spi::get_one::<i64>("SELECT lightretriever.lr_store_query_tables()").unwrap(), Some(1));
        assert_eq!(Spi::get_one::<i64>("SELECT lightretriever.lr_store_query_tables()").unwrap(), Some(0), "nothing left to store");
        assert_eq!(Spi::get_one::<String>("SELECT file FROM lightretriever.lr_query_tables").unwrap().unwrap(), file);
        assert!(!std::path::Path::new(&old_name).exists(), "renamed to the name every server derives");
        std::fs::remove_file(&file).unwrap();
        next_statement();
        assert_eq!(Spi::get_one::<Vector>(query).unwrap().unwrap().0, good.0, "written again from the stored bytes");

        // Stored bytes damaged, file gone: refused.
        Spi::run("UPDATE lightretriever.lr_query_table_chunks SET data = overlay(data placing '\\x00'::bytea from 200) WHERE chunk = 0").unwrap();
        std::fs::remove_file(&file).unwrap();
        next_statement();
        let message = error_of(query);
        assert!(message.contains("the stored bytes of version 1 of the table of \"tq\" do not verify"), "{message}");
        assert!(!std::path::Path::new(&file).exists(), "nothing that fails verification is left as the file");
    }
}
