use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::test_support::*;
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn queued(queue: &str) -> i64 {
        count(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\""))
    }

    /// The #[pg_test] server starts no worker: the triggers and the queue are observable as they
    /// are left, row by row.
    #[pg_test]
    fn triggers_queue_exactly_the_rows_that_need_encoding() {
        register_dense_model();
        Spi::run(
            "CREATE SCHEMA \"Q s\";
             CREATE TABLE \"Q s\".\"Docs\" (id int PRIMARY KEY, body text, tag int DEFAULT 0);
             INSERT INTO \"Q s\".\"Docs\" VALUES (1, 'one', 0), (2, NULL, 0), (3, 'three', 0);
             SELECT lightretriever.lr_enable_auto_encoding('\"Q s\".\"Docs\"', 'body', 'minilm');",
        )
        .unwrap();
        let queue = Spi::get_one::<String>(
            "SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = '\"Q s\".\"Docs\"'::regclass",
        )
        .unwrap()
        .unwrap();
        // Backfill: the two rows with text; the column is vector(384).
        assert_eq!(queued(&queue), 2);
        let typ = Spi::get_one::<String>(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '\"Q s\".\"Docs\"'::regclass AND attname = 'body_embedding'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(typ, "vector(384)");
        // Insert with text: queued; with NULL text: not queued.
        Spi::run("INSERT INTO \"Q s\".\"Docs\" VALUES (4, 'four', 0), (5, NULL, 0)").unwrap();
        assert_eq!(queued(&queue), 3);
        // A vector written by the worker survives non-text updates, which queue nothing.
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body_embedding = lightretriever.lr_encode_document('one', 'minilm') WHERE id = 1").unwrap();
        Spi::run("UPDATE \"Q s\".\"Docs\" SET tag = 7 WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 3);
        assert_eq!(count("SELECT count(*) FROM \"Q s\".\"Docs\" WHERE id = 1 AND body_embedding IS NOT NULL"), 1);
        // Same text again: nothing; new text: the stale vector is cleared and the row queued.
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body = 'one' WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 3);
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body = 'uno' WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 4);
        assert_eq!(count("SELECT count(*) FROM \"Q s\".\"Docs\" WHERE id = 1 AND body_embedding IS NULL"), 1);
        // Text set to NULL: vector cleared, nothing queued.
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body = NULL WHERE id = 3").unwrap();
        assert_eq!(queued(&queue), 4);
        // Delete: its queue entries go.
        Spi::run("DELETE FROM \"Q s\".\"Docs\" WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 2);
        assert_eq!(count(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\" WHERE key = ARRAY['1']")), 0);
        // TRUNCATE empties the queue.
        Spi::run("TRUNCATE \"Q s\".\"Docs\"").unwrap();
        assert_eq!(queued(&queue), 0);
        // The status view sees the table; DROP TABLE removes everything made for it.
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_encoding_status WHERE source = '\"Q s\".\"Docs\"'::regclass"), 1);
        Spi::run("DROP TABLE \"Q s\".\"Docs\"").unwrap();
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_auto_encodings"), 0);
        assert_eq!(count(&format!("SELECT count(*) FROM pg_class WHERE relname = '{queue}'")), 0);
        assert_eq!(count("SELECT count(*) FROM pg_proc WHERE proname ~ '^lr_auto_encoding_[0-9]+_'"), 0);
    }

    /// Runs `setup`, then enables `table.column` on the default test model.
    fn enable(setup: &str, table: &str, column: &str) {
        register_dense_model();
        Spi::run(setup).unwrap();
        Spi::run_with_args("SELECT lightretriever.lr_enable_auto_encoding($1::regclass, $2, 'minilm')", &[table.into(), column.into()])
            .unwrap();
    }

    #[pg_test(error = "lightretriever: \"Q s\".nokey has no primary key")]
    fn a_table_without_primary_key_is_refused() {
        enable("CREATE SCHEMA \"Q s\"; CREATE TABLE \"Q s\".nokey (body text)", "\"Q s\".nokey", "body");
    }

    #[pg_test(error = "lightretriever: column \"n\" of public.t_int is integer, not text")]
    fn a_non_text_column_is_refused() {
        enable("CREATE TABLE t_int (id int PRIMARY KEY, n int)", "t_int", "n");
    }

    #[pg_test(error = "lightretriever: public.t_nocol has no column \"nope\"")]
    fn a_missing_column_is_refused() {
        enable("CREATE TABLE t_nocol (id int PRIMARY KEY, body text)", "t_nocol", "nope");
    }

    #[pg_test(error = "lightretriever: column \"full_text\" of public.t_gen is a generated column")]
    fn a_generated_column_is_refused() {
        enable(
            "CREATE TABLE t_gen (id int PRIMARY KEY, title text, body text, full_text text GENERATED ALWAYS AS (title || ' ' || body) STORED)",
            "t_gen",
            "full_text",
        );
    }

    #[pg_test(error = "lightretriever: public.t_twice is already auto-encoded")]
    fn enabling_twice_is_refused() {
        enable("CREATE TABLE t_twice (id int PRIMARY KEY, body text)", "t_twice", "body");
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('t_twice', 'body', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: no encoder worker is running, and models do not run in backends")]
    fn without_a_worker_models_do_not_run_in_backends() {
        register_dense_model();
        Spi::run("SET LOCAL lightretriever.allow_backend_models = off").unwrap();
        Spi::run("SELECT lightretriever.lr_encode_document('x', 'minilm')").unwrap();
    }

    #[pg_test]
    fn renamed_columns_are_followed_and_breaking_changes_refused() {
        enable("CREATE TABLE t_ren (id int PRIMARY KEY, body text); INSERT INTO t_ren VALUES (1, 'x')", "t_ren", "body");
        Spi::run("ALTER TABLE t_ren RENAME COLUMN body TO content; ALTER TABLE t_ren RENAME COLUMN body_embedding TO emb").unwrap();
        let names = Spi::get_two::<String, String>("SELECT text_column::text, vector_column::text FROM lightretriever.lr_auto_encodings").unwrap();
        assert_eq!(names, (Some("content".into()), Some("emb".into())));
        // The regenerated triggers use the new names: writes work and queue as before.
        Spi::run("INSERT INTO t_ren VALUES (2, 'two'); UPDATE t_ren SET content = 'uno' WHERE id = 1").unwrap();
        let queue = Spi::get_one::<String>("SELECT queue_table::text FROM lightretriever.lr_auto_encodings").unwrap().unwrap();
        assert_eq!(Spi::get_one::<i64>(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")).unwrap(), Some(3));
        assert_eq!(
            error_of("ALTER TABLE t_ren DROP CONSTRAINT t_ren_pkey"),
            "lightretriever: public.t_ren is auto-encoded: its primary key (id) cannot be dropped or changed"
        );
        // The enqueue trigger watches the vector column (an UPDATE erasing a vector re-enqueues
        // the row), as it watches the text: PostgreSQL itself refuses to drop or retype it, and
        // with CASCADE (the trigger goes too) lightretriever refuses.
        assert_eq!(error_of("ALTER TABLE t_ren DROP COLUMN emb"), "cannot drop column emb of table t_ren because other objects depend on it");
        assert_eq!(
            error_of("ALTER TABLE t_ren DROP COLUMN emb CASCADE"),
            "lightretriever: public.t_ren is auto-encoded: its vector column \"emb\" cannot be dropped"
        );
        assert_eq!(
            error_of("ALTER TABLE t_ren ALTER COLUMN emb TYPE vector(3) USING NULL"),
            "cannot alter type of a column used in a trigger definition"
        );
        assert_eq!(
            error_of("ALTER TABLE t_ren DROP COLUMN content CASCADE"),
            "lightretriever: public.t_ren is auto-encoded: its text column \"content\" cannot be dropped"
        );
        // Unrelated changes pass; the status view keeps working.
        Spi::run("ALTER TABLE t_ren ADD COLUMN tag int").unwrap();
        assert_eq!(Spi::get_one::<String>("SELECT status FROM lightretriever.lr_encoding_status").unwrap().as_deref(), Some("active"));
    }

    /// Commands that change an auto-encoded table's columns without naming it: ALTER TABLE of an
    /// inheritance parent or a partitioned table, ALTER TYPE … CASCADE of a typed table's type.
    /// Renames are followed; losing what the table is encoded by is refused for a role with the
    /// owner's rights, and takes the auto-encoding (not the vectors) for another role's command.
    #[pg_test]
    fn changes_through_a_parent_or_a_type_are_followed() {
        let names = |table: &str| {
            Spi::get_three::<String, String, Vec<String>>(&format!(
                "SELECT text_column::text, vector_column::text, key_columns::text[] FROM lightretriever.lr_auto_encodings WHERE source = '{table}'::regclass"
            ))
            .unwrap()
        };
        let encoded = |table: &str| {
            Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT FROM lightretriever.lr_auto_encodings WHERE source = '{table}'::regclass)")).unwrap().unwrap()
        };
        let queued = |table: &str| {
            let queue = Spi::get_one::<String>(&format!("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = '{table}'::regclass"))
                .unwrap()
                .unwrap();
            Spi::get_one::<i64>(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")).unwrap().unwrap()
        };
        let triggers = |table: &str| {
            Spi::get_one::<i64>(&format!("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal")).unwrap().unwrap()
        };
        // A grandchild auto-encoded on columns it inherits.
        enable(
            "CREATE TABLE t_par (id int PRIMARY KEY, body text);
             CREATE TABLE t_mid () INHERITS (t_par);
             CREATE TABLE t_kid (PRIMARY KEY (id)) INHERITS (t_mid);
             INSERT INTO t_kid VALUES (1, 'x')",
            "t_kid",
            "body",
        );
        Spi::run("ALTER TABLE t_par RENAME COLUMN body TO content; ALTER TABLE t_par RENAME COLUMN id TO ident").unwrap();
        assert_eq!(names("t_kid"), (Some("content".into()), Some("body_embedding".into()), Some(vec!["ident".into()])));
        Spi::run("INSERT INTO t_kid VALUES (2, 'two'); UPDATE t_kid SET content = 'uno' WHERE ident = 1").unwrap();
        assert_eq!(queued("t_kid"), 3);
        // (PostgreSQL itself refuses to retype a column the triggers watch, or to drop it without CASCADE.)
        assert_eq!(error_of("ALTER TABLE t_par ALTER COLUMN content TYPE int USING NULL"), "cannot alter type of a column used in a trigger definition");
        Spi::run("ALTER TABLE t_par ADD COLUMN note text").unwrap();
        assert!(encoded("t_kid"), "an unrelated change");
        // (Only a role with the child's owner's rights may drop its column through the parent.)
        assert_eq!(
            error_of("ALTER TABLE t_par DROP COLUMN content CASCADE"),
            "lightretriever: public.t_kid is auto-encoded: its text column \"content\" cannot be dropped"
        );

        // A typed table: ALTER TYPE … RENAME ATTRIBUTE … CASCADE renames its column.
        Spi::run(
            "CREATE TABLE t_typed (id int PRIMARY KEY, body text); INSERT INTO t_typed VALUES (1, 'x');
             SELECT lightretriever.lr_enable_auto_encoding('t_typed', 'body', 'minilm');
             CREATE TYPE t_doc AS (id int, body text, body_embedding vector(384));
             ALTER TABLE t_typed OF t_doc;
             ALTER TYPE t_doc RENAME ATTRIBUTE body TO content CASCADE",
        )
        .unwrap();
        assert_eq!(names("t_typed"), (Some("content".into()), Some("body_embedding".into()), Some(vec!["id".into()])));
        Spi::run("INSERT INTO t_typed VALUES (2, 'two')").unwrap();
        assert_eq!(queued("t_typed"), 2);
        Spi::run("ALTER TYPE t_doc ADD ATTRIBUTE tag int CASCADE").unwrap();
        assert!(encoded("t_typed"), "an unrelated change");
        assert_eq!(
            error_of("ALTER TYPE t_doc DROP ATTRIBUTE content CASCADE"),
            "lightretriever: public.t_typed is auto-encoded: its text column \"content\" cannot be dropped"
        );

        // A partition owned by another role: the partitioned table's owner may drop the primary
        // key of every partition. That role's command is not refused; the partition loses its
        // auto-encoding.
        Spi::run(
            "CREATE ROLE t_parent_owner; CREATE ROLE t_partition_owner;
             CREATE TABLE t_part (id int PRIMARY KEY, body text); INSERT INTO t_part VALUES (1, 'x');
             SELECT lightretriever.lr_enable_auto_encoding('t_part', 'body', 'minilm');
             CREATE TABLE t_parted (id int PRIMARY KEY, body text, body_embedding vector(384)) PARTITION BY RANGE (id);
             ALTER TABLE t_parted ATTACH PARTITION t_part FOR VALUES FROM (0) TO (100);
             ALTER TABLE t_parted OWNER TO t_parent_owner; ALTER TABLE t_part OWNER TO t_partition_owner",
        )
        .unwrap();
        assert!(encoded("t_part"));
        // A role with the partition's owner's rights is refused, as on the partition itself.
        assert_eq!(
            error_of("ALTER TABLE t_parted DROP CONSTRAINT t_parted_pkey"),
            "lightretriever: public.t_part is auto-encoded: its primary key (id) cannot be dropped or changed"
        );
        Spi::run("UPDATE t_part SET body_embedding = array_fill(0.5, ARRAY[384])::vector").unwrap();
        Spi::run("SET LOCAL ROLE t_parent_owner; ALTER TABLE t_parted DROP CONSTRAINT t_parted_pkey; RESET ROLE").unwrap();
        assert!(!encoded("t_part"));
        assert_eq!(triggers("t_part"), 0);
        assert_eq!(Spi::get_one::<i64>("SELECT count(body_embedding) FROM t_part").unwrap(), Some(1), "its vectors are kept");

        // Only the event triggers call it.
        let public = Spi::get_one::<bool>("SELECT has_function_privilege('public', 'lightretriever.lr_auto_encoding_follow(oid, boolean)', 'EXECUTE')");
        assert_eq!(public.unwrap(), Some(false));
    }

    /// A column or key that goes with another object (its collation, its domain: DROP …
    /// CASCADE, which a role that does not own the table may run) takes the table's
    /// auto-encoding with it when that role runs it; its vectors stay. The owner is refused.
    /// Other columns may go.
    #[pg_test]
    fn columns_dropped_with_another_object_disable_the_auto_encoding() {
        let encoded = |table: &str| {
            Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT FROM lightretriever.lr_auto_encodings WHERE source = '{table}'::regclass)")).unwrap().unwrap()
        };
        let queued = || {
            let queue = Spi::get_one::<String>("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = 't_dom'::regclass").unwrap().unwrap();
            Spi::get_one::<i64>(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")).unwrap().unwrap()
        };
        enable(
            "CREATE DOMAIN t_key AS int; CREATE COLLATION t_coll FROM \"C\"; CREATE COLLATION t_other FROM \"C\";
             CREATE TABLE t_col (id int PRIMARY KEY, body text COLLATE t_coll); INSERT INTO t_col VALUES (1, 'x');
             CREATE TABLE t_dom (id t_key PRIMARY KEY, body text, note text COLLATE t_other); INSERT INTO t_dom VALUES (1, 'x')",
            "t_col",
            "body",
        );
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('t_dom', 'body', 'minilm')").unwrap();
        Spi::run("UPDATE t_col SET body_embedding = array_fill(0.5, ARRAY[384])::vector").unwrap();
        // An unrelated column: nothing changes.
        Spi::run("DROP COLLATION t_other CASCADE").unwrap();
        assert!(encoded("t_dom"));
        Spi::run("INSERT INTO t_dom VALUES (2, 'two')").unwrap();
        assert_eq!(queued(), 2);
        // The text column, by the collation's owner, who does not own the table.
        Spi::run("CREATE ROLE t_collation_owner; ALTER COLLATION t_coll OWNER TO t_collation_owner").unwrap();
        Spi::run("SET LOCAL ROLE t_collation_owner; DROP COLLATION t_coll CASCADE; RESET ROLE").unwrap();
        assert!(!encoded("t_col"));
        assert_eq!(Spi::get_one::<i64>("SELECT count(body_embedding) FROM t_col").unwrap(), Some(1), "its vectors are kept");
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_col'::regclass AND NOT tgisinternal").unwrap(), Some(0));
        Spi::run("INSERT INTO t_col (id) VALUES (2)").unwrap();
        // The key column (and with it the primary key): refused for a role with the table
        // owner's rights, as ALTER TABLE … DROP COLUMN is; the domain's owner's command is not.
        assert_eq!(
            error_of("DROP DOMAIN t_key CASCADE"),
            "lightretriever: public.t_dom is auto-encoded: its primary key (id) cannot be dropped or changed"
        );
        assert!(encoded("t_dom"));
        Spi::run("CREATE ROLE t_domain_owner; ALTER DOMAIN t_key OWNER TO t_domain_owner").unwrap();
        Spi::run("SET LOCAL ROLE t_domain_owner; DROP DOMAIN t_key CASCADE; RESET ROLE").unwrap();
        assert!(!encoded("t_dom"));
        Spi::run("INSERT INTO t_dom (body) VALUES ('three')").unwrap();
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM lightretriever.lr_encoding_status").unwrap(), Some(0));
    }

    #[pg_test]
    fn null_arguments_are_named_errors() {
        register_dense_model();
        for (sql, argument) in [
            ("SELECT lightretriever.lr_enable_auto_encoding(NULL, 'body')", "source"),
            ("SELECT lightretriever.lr_enable_auto_encoding('pg_class', NULL)", "text_column"),
            ("SELECT lightretriever.lr_disable_auto_encoding(NULL)", "source"),
            ("SELECT lightretriever.lr_retry_failed(NULL)", "source"),
            ("SELECT * FROM lightretriever.lr_search(NULL, 'q')", "source"),
            ("SELECT * FROM lightretriever.lr_search('pg_class', NULL)", "query"),
            ("SELECT lightretriever.lr_register_model(NULL, '/x')", "name"),
            ("SELECT lightretriever.lr_drop_model(NULL)", "name"),
            ("SELECT lightretriever.lr_build_query_table('minilm', dtype => NULL)", "dtype"),
            ("SELECT lightretriever.lr_fit_query_table('minilm', 'pg_class', NULL)", "text_column"),
            ("SELECT lightretriever.lr_fit_sparse_query_weights(NULL, 'pg_class', 'relname')", "model"),
            ("SELECT lightretriever.lr_encode_query_sparse('q', 'minilm', NULL)", "weighting"),
            ("SELECT lightretriever.lr_wait_for_encoding(NULL)", "source"),
        ] {
            assert_eq!(error_of(sql), format!("lightretriever: argument \"{argument}\" must not be NULL"), "{sql}");
        }
    }

    /// The vectors an auto-encoding adds are stored in the row (STORAGE MAIN), in a plain table
    /// and in every partition of a partitioned one, present or later: a search then reads no
    /// candidate through TOAST. A row of 384 dimensions and a 400-term sparse vector (4.7 kB)
    /// would go out of line with pgvector's own storage. (Values that do not repeat: MAIN may
    /// compress a row, and a vector of one repeated value compresses to nothing.)
    #[pg_test]
    fn auto_encoded_vectors_are_stored_in_the_row() {
        register_dense_model();
        register_sparse_model();
        Spi::run(
            "CREATE TABLE inline_docs (id int PRIMARY KEY, body text);
             CREATE TABLE inline_parted (id int PRIMARY KEY, body text) PARTITION BY RANGE (id);
             CREATE TABLE inline_low PARTITION OF inline_parted FOR VALUES FROM (0) TO (100);
             CREATE TABLE inline_high PARTITION OF inline_parted FOR VALUES FROM (100) TO (200);
             INSERT INTO inline_docs VALUES (1, 'one'), (2, 'two');
             INSERT INTO inline_parted VALUES (1, 'one'), (150, 'later');
             SELECT lightretriever.lr_enable_auto_encoding('inline_docs', 'body', 'minilm', 'splade');
             SELECT lightretriever.lr_enable_auto_encoding('inline_parted', 'body', 'minilm', 'splade');
             CREATE TABLE inline_later PARTITION OF inline_parted FOR VALUES FROM (200) TO (300);",
        )
        .unwrap();
        let storage = count(
            "SELECT count(*) FROM pg_attribute WHERE attrelid IN ('inline_docs'::regclass, 'inline_parted'::regclass, 'inline_low'::regclass,
                    'inline_high'::regclass, 'inline_later'::regclass) AND attname IN ('body_embedding', 'body_sparse') AND attstorage = 'm'",
        );
        assert_eq!(storage, 10, "both columns of the table, the partitioned table and its three partitions");
        // Vectors written as the worker writes them.
        Spi::run(
            "INSERT INTO inline_parted VALUES (250, 'latest');
             CREATE TEMP TABLE big AS SELECT (SELECT array_agg(sin(i))::vector FROM generate_series(1, 384) i) AS v,
                    ('{' || string_agg(i * 7 || ':' || cos(i), ',') || '}/30522')::sparsevec AS s FROM generate_series(1, 400) i;
             UPDATE inline_docs SET body_embedding = big.v, body_sparse = big.s FROM big;
             UPDATE inline_parted SET body_embedding = big.v, body_sparse = big.s FROM big;",
        )
        .unwrap();
        assert!(count("SELECT min(pg_column_size(d.*)) FROM inline_docs d") > 4_000, "rows past TOAST's 2 kB threshold");
        let out_of_line = count(
            "SELECT coalesce(sum(pg_relation_size(reltoastrelid)), 0)::bigint FROM pg_class WHERE relname IN ('inline_docs', 'inline_low', 'inline_high', 'inline_later')",
        );
        assert_eq!(out_of_line, 0, "no vector went out of line");
        assert_eq!(count("SELECT count(*) FROM inline_parted WHERE body_sparse IS NOT NULL"), 3);
        // The way back to pgvector's storage (README) keeps the auto-encoding.
        Spi::run("ALTER TABLE inline_docs ALTER COLUMN body_embedding SET STORAGE EXTERNAL, ALTER COLUMN body_sparse SET STORAGE EXTERNAL").unwrap();
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_auto_encodings WHERE source = 'inline_docs'::regclass"), 1);
    }

    /// Pause and resume set the status the workers drain by (they take only 'active' tables);
    /// the triggers keep queueing while paused, and a paused wait gives false at once.
    #[pg_test]
    fn pause_and_resume_keep_the_queue_and_switch_the_status() {
        register_dense_model();
        Spi::run(
            "CREATE TABLE paused_docs (id int PRIMARY KEY, body text);
             INSERT INTO paused_docs VALUES (1, 'one'), (2, 'two');
             SELECT lightretriever.lr_enable_auto_encoding('paused_docs', 'body', 'minilm');",
        )
        .unwrap();
        let status = || Spi::get_one::<String>("SELECT status FROM lightretriever.lr_encoding_status").unwrap().unwrap();
        let pending = || count("SELECT pending FROM lightretriever.lr_encoding_status");
        assert_eq!((status().as_str(), pending()), ("active", 2));
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_pause_auto_encoding('paused_docs')").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_pause_auto_encoding('paused_docs')").unwrap(), Some(false));
        assert_eq!(status(), "paused");
        Spi::run("INSERT INTO paused_docs VALUES (3, 'three')").unwrap();
        assert_eq!(pending(), 3);
        let started = std::time::Instant::now();
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_wait_for_encoding('paused_docs', '1 minute')").unwrap(), Some(false));
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "a paused wait waited");
        Spi::run("CREATE ROLE lr_not_owner; SET ROLE lr_not_owner").unwrap();
        let message = error_of("SELECT lightretriever.lr_resume_auto_encoding('paused_docs')");
        Spi::run("RESET ROLE").unwrap();
        assert!(message.contains("must be the owner of table public.paused_docs"), "{message}");
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_resume_auto_encoding('paused_docs')").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_resume_auto_encoding('paused_docs')").unwrap(), Some(false));
        assert_eq!((status().as_str(), pending()), ("active", 3));
    }

    /// A table whose queue cannot be read shows in lr_failed_items as one row without a key
    /// whose error says why (and in the status view as broken): never as a silent 0 rows.
    #[pg_test]
    fn a_queue_that_cannot_be_read_is_a_row_that_says_so() {
        register_dense_model();
        Spi::run(
            "CREATE TABLE unreadable_docs (id int PRIMARY KEY, body text);
             INSERT INTO unreadable_docs VALUES (1, 'one');
             SELECT lightretriever.lr_enable_auto_encoding('unreadable_docs', 'body', 'minilm');",
        )
        .unwrap();
        let queue = Spi::get_one::<String>("SELECT queue_table::text FROM lightretriever.lr_auto_encodings").unwrap().unwrap();
        let failed_rows = || count("SELECT count(*) FROM lightretriever.lr_failed_items");
        assert_eq!(failed_rows(), 0);
        Spi::run(&format!("ALTER TABLE lightretriever_queues.\"{queue}\" RENAME COLUMN failed_at TO failed_when")).unwrap();
        let (key_missing, attempts_missing, error) = Spi::get_three::<bool, bool, String>(
            "SELECT row_key IS NULL, attempts IS NULL, error FROM lightretriever.lr_failed_items",
        )
        .unwrap();
        assert_eq!((key_missing, attempts_missing), (Some(true), Some(true)));
        let error = error.unwrap();
        assert!(error.starts_with("lightretriever: failed rows cannot be read: ") && error.contains("failed_at"), "{error}");
        assert_eq!(failed_rows(), 1, "one row for the table, not 0");
        let status = Spi::get_one::<String>("SELECT status FROM lightretriever.lr_encoding_status").unwrap().unwrap();
        assert_eq!(status, "broken");
    }

    /// The trigger DDL runs as the extension's owner on the table's name: a name that has come
    /// to mean another table (two schemas swapped after the name was read) is refused before any
    /// DDL runs on it.
    #[pg_test]
    fn trigger_ddl_refuses_a_name_that_means_another_table() {
        Spi::run(
            "CREATE SCHEMA pin_a; CREATE TABLE pin_a.t (id int PRIMARY KEY, body text);
             CREATE SCHEMA pin_b; CREATE TABLE pin_b.t (id int PRIMARY KEY, body text);",
        )
        .unwrap();
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'pin_a.t'::regclass::oid").unwrap().unwrap();
        let pin = |name: &'static str| crate::spi::in_subtransaction(|| crate::auto::enable::pin_source_name(oid, name, pg_sys::ShareRowExclusiveLock));
        assert_eq!(pin("pin_b.t"), Err(format!("lightretriever: the name pin_b.t no longer means the auto-encoded table (oid {})", oid.to_u32())));
        assert_eq!(pin("pin_a.gone"), Err(format!("lightretriever: the name pin_a.gone no longer means the auto-encoded table (oid {})", oid.to_u32())));
        assert_eq!(pin("pin_a.t"), Ok(()));
    }
}
