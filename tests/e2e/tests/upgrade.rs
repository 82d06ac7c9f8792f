//! Upgrades (issue 12): earlier releases installed from their committed scripts
//! (`tests/upgrade/lightretriever--<version>.sql`, copied into the server's extension directory
//! by scripts/e2e.sh). The first release, given models, a query table, fitted sparse weights and
//! an auto-encoded table with pending queue rows, then `ALTER EXTENSION lightretriever UPDATE`
//! through every upgrade script since: nothing is lost, the queue drains to exact vectors, and the
//! upgraded extension is object for object a fresh install of the current version. Every later
//! release updates to a fresh install's objects too.
//!
//! Runs in the database the workers drain (`postgres`), last of the e2e suites (it drops and
//! recreates the extension there).

use lr_e2e::*;
use postgres::Client;

/// The first release: its upgrade runs every upgrade script since.
const PREVIOUS: &str = "0.1.0";
/// Every release after the first.
const LATER_RELEASES: [&str; 9] = ["0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0", "0.10.0"];

/// The extension's version (the root Cargo.toml's; pgrx writes it into the control file).
fn current_version() -> String {
    let manifest = include_str!("../../../Cargo.toml");
    let line = manifest.lines().find(|l| l.starts_with("version = ")).expect("a version in Cargo.toml");
    line.trim_start_matches("version = ").trim_matches('"').to_owned()
}

fn one<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Every object of the extension with what defines it: functions with their signature,
/// properties and settings, tables with their columns, views with their definition, policies,
/// triggers, event triggers, privileges. Two installs with equal lists are the same extension.
fn extension_objects(c: &mut Client) -> Vec<String> {
    c.query(
        "WITH members AS (
           SELECT d.classid, d.objid FROM pg_depend d
             JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
            WHERE e.extname = 'lightretriever' AND d.deptype = 'e')
         SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
                || pg_get_function_result(p.oid) || ' ' || p.provolatile::text || p.proparallel::text
                || CASE WHEN p.proisstrict THEN ' strict' ELSE '' END
                || CASE WHEN p.prosecdef THEN ' definer' ELSE '' END
                || ' cost=' || p.procost::text
                || coalesce(' ' || array_to_string(p.proconfig, ','), '')
                || ' src=' || p.prosrc || coalesce(' acl=' || p.proacl::text, '')
           FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
         UNION ALL
         SELECT 'relation ' || c.relname || ' ' || c.relkind::text
                || CASE WHEN c.relrowsecurity THEN ' rls' ELSE '' END
                || coalesce(' acl=' || c.relacl::text, '')
                || CASE WHEN c.oid = ANY ((SELECT e.extconfig FROM pg_extension e WHERE e.extname = 'lightretriever')::oid[])
                        THEN ' dumped' ELSE '' END
                || ' (' || (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                               || ' storage=' || a.attstorage::text
                                               || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''), ', ' ORDER BY a.attnum)
                              FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) || ')'
                || CASE WHEN c.relkind = 'v' THEN ' as ' || pg_get_viewdef(c.oid) ELSE '' END
           FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
         UNION ALL
         SELECT 'constraint ' || r.conrelid::regclass::text || ' ' || pg_get_constraintdef(r.oid)
           FROM pg_constraint r JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = r.conrelid
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(i.indexrelid)
           FROM pg_index i JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = i.indrelid
         UNION ALL
         SELECT 'policy ' || p.polrelid::regclass::text || ' ' || p.polname || ' ' || p.polcmd::text
                || coalesce(' using ' || pg_get_expr(p.polqual, p.polrelid), '')
           FROM pg_policy p JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = p.polrelid
         UNION ALL
         SELECT 'trigger ' || pg_get_triggerdef(t.oid)
           FROM pg_trigger t JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = t.tgrelid
          WHERE NOT t.tgisinternal
         UNION ALL
         SELECT 'event trigger ' || t.evtname || ' ' || t.evtevent || ' ' || t.evtfoid::regproc::text
                || coalesce(' ' || t.evttags::text, '')
           FROM members m JOIN pg_event_trigger t ON m.classid = 'pg_event_trigger'::regclass AND t.oid = m.objid
         UNION ALL
         SELECT 'other ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
          WHERE m.classid NOT IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_event_trigger'::regclass)
         ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn an_upgrade_from_the_previous_release_keeps_everything_and_equals_a_fresh_install() {
    // The current version, fresh, in a database of its own: what the upgrade must give.
    let mut fresh = fresh_database("lr_e2e_upgrade_fresh");
    let fresh_objects = extension_objects(&mut fresh);
    assert!(fresh_objects.iter().any(|o| o.starts_with("function lr_pause_auto_encoding(")), "{fresh_objects:#?}");
    assert!(!fresh_objects.iter().any(|o| o.contains("roundtrip")), "test helpers in the shipped SQL: {fresh_objects:#?}");
    drop(fresh);

    // The previous release, in the database the workers drain.
    let mut c = fresh_connection("postgres");
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS lr_up CASCADE;
         DROP EXTENSION IF EXISTS lightretriever CASCADE;
         CREATE EXTENSION lightretriever VERSION '{PREVIOUS}' CASCADE;"
    ))
    .unwrap();
    assert_eq!(one::<String>(&mut c, "SELECT extversion FROM pg_extension WHERE extname = 'lightretriever'"), PREVIOUS);
    let previous_objects = extension_objects(&mut c);
    assert_ne!(previous_objects, fresh_objects, "the releases should differ (this test would prove nothing)");
    c.execute("SELECT lightretriever.lr_register_model('minilm', $1)", &[&dense_model_dir().to_string_lossy().as_ref()]).unwrap();
    c.execute("SELECT lightretriever.lr_register_model('splade', $1)", &[&sparse_model_dir().to_string_lossy().as_ref()]).unwrap();
    c.batch_execute(
        "CREATE SCHEMA lr_up;
         CREATE TABLE lr_up.docs (id int PRIMARY KEY, body text);
         INSERT INTO lr_up.docs SELECT i, 'document number ' || i || ' about ' || (ARRAY['rivers','libraries','engines','music'])[1 + i % 4]
           FROM generate_series(1, 40) i;
         SELECT lightretriever.lr_build_query_table('minilm');
         SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'lr_up.docs', 'body');
         SELECT lightretriever.lr_enable_auto_encoding('lr_up.docs', 'body', 'minilm', 'splade');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_up.docs", 180);
    // Pending rows across the upgrade: the workers leave a table alone whose status is not
    // 'active' (0.1.0 had the status, not the functions to set it).
    c.batch_execute(
        "UPDATE lightretriever.lr_auto_encodings SET status = 'paused' WHERE source = 'lr_up.docs'::regclass;
         UPDATE lr_up.docs SET body = body || ' revised' WHERE id <= 10;
         INSERT INTO lr_up.docs SELECT i, 'late document ' || i FROM generate_series(41, 50) i;",
    )
    .unwrap();
    let state = |c: &mut Client| -> (i64, i64, i64, i64, String, String) {
        (
            one(c, "SELECT count(*) FROM lightretriever.lr_models"),
            one(c, "SELECT count(*) FROM lightretriever.lr_query_tables"),
            one(c, "SELECT count(*) FROM lightretriever.lr_sparse_query_weights"),
            one(c, "SELECT pending FROM lightretriever.lr_encoding_status WHERE source = 'lr_up.docs'::regclass"),
            one(c, "SELECT lightretriever.lr_encode_query('a document about rivers', 'minilm')::text"),
            one(c, "SELECT lightretriever.lr_encode_query_sparse('a document about rivers', 'splade')::text"),
        )
    };
    // The enqueue trigger as releases before 0.5.0 made it (text and key columns only): the
    // update regenerates every table's triggers (lr_regenerate_auto_encoding_triggers).
    c.batch_execute(
        "DO $$ DECLARE f text := format('lightretriever.%I', 'lr_auto_encoding_' || (SELECT id FROM lightretriever.lr_auto_encodings
                                                                                      WHERE source = 'lr_up.docs'::regclass) || '_enqueue');
         BEGIN
           DROP TRIGGER lr_auto_encoding_enqueue ON lr_up.docs;
           EXECUTE format('CREATE TRIGGER lr_auto_encoding_enqueue AFTER INSERT OR UPDATE OF body, id ON lr_up.docs FOR EACH ROW EXECUTE FUNCTION %s()', f);
         END $$",
    )
    .unwrap();
    let before = state(&mut c);
    assert_eq!((before.0, before.1, before.2, before.3), (2, 1, 1, 20), "{before:?}");
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM lr_up.docs WHERE body_embedding IS NULL"), 20);

    c.batch_execute("ALTER EXTENSION lightretriever UPDATE").unwrap();
    assert_eq!(one::<String>(&mut c, "SELECT extversion FROM pg_extension WHERE extname = 'lightretriever'"), current_version());
    let mut c = fresh_connection("postgres"); // a backend that never saw the previous version
    assert_eq!(state(&mut c), before, "the upgrade changed models, tables, weights, the queue or the query vectors");
    assert_eq!(extension_objects(&mut c), fresh_objects, "the upgraded extension differs from a fresh install");
    // The table built before 0.6.0 was stored in the database by the update, its file renamed
    // to the name every server derives; removed, it is written again from the stored bytes.
    let (stored, file): (i64, String) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM lightretriever.lr_query_table_chunks WHERE model = 'minilm'), file
                   FROM lightretriever.lr_query_tables WHERE model = 'minilm'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(stored > 0, "the update stored no chunks");
    let checksum: String = one(&mut c, "SELECT checksum FROM lightretriever.lr_query_tables WHERE model = 'minilm'");
    assert!(file.ends_with(&format!("-v1-{checksum}.lrt")), "{file}");
    let data_dir: String = one(&mut c, "SHOW data_directory");
    std::fs::remove_file(std::path::Path::new(&data_dir).join(&file)).unwrap();
    let mut c = fresh_connection("postgres");
    assert_eq!(state(&mut c), before, "the table written again from the database gives other vectors");
    assert!(std::path::Path::new(&data_dir).join(&file).exists());

    // The queue the previous version filled drains under the current one, to exact vectors.
    let resumed: bool = one(&mut c, "SELECT lightretriever.lr_resume_auto_encoding('lr_up.docs')");
    assert!(resumed);
    wait_for_encoding(&mut c, "lr_up.docs", 180);
    assert_eq!(wrong_vectors(&mut c, "lr_up.docs", "id", "body", "body_embedding"), 0);
    let sparse_wrong: i64 = one(
        &mut c,
        "SELECT count(*) FROM lr_up.docs
          WHERE body_sparse IS NULL OR (body_sparse <-> lightretriever.lr_encode_document_sparse(body, 'splade')) > 1e-4",
    );
    assert_eq!(sparse_wrong, 0);
    let hits: i64 = one(&mut c, "SELECT count(*) FROM lightretriever.lr_search('lr_up.docs', 'rivers', k => 5)");
    assert_eq!(hits, 5);
    let failed: i64 = one(&mut c, "SELECT count(*) FROM lightretriever.lr_failed_items");
    assert_eq!(failed, 0);
    // The regenerated triggers: vectors erased with the text unchanged are encoded again.
    c.batch_execute("UPDATE lr_up.docs SET body_embedding = NULL, body_sparse = NULL WHERE id BETWEEN 11 AND 15").unwrap();
    wait_for_encoding(&mut c, "lr_up.docs", 180);
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM lr_up.docs WHERE body_embedding IS NULL OR body_sparse IS NULL"), 0);
    assert_eq!(wrong_vectors(&mut c, "lr_up.docs", "id", "body", "body_embedding"), 0);
    c.batch_execute("DROP SCHEMA lr_up CASCADE").unwrap();
}

#[test]
fn every_later_release_updates_to_a_fresh_install() {
    let mut fresh = fresh_database("lr_e2e_upgrade_fresh_objects");
    let fresh_objects = extension_objects(&mut fresh);
    assert!(fresh_objects.iter().any(|o| o.starts_with("function lr_rerank(")), "{fresh_objects:#?}");
    drop(fresh);
    for release in LATER_RELEASES {
        let mut c = fresh_database("lr_e2e_upgrade_release");
        c.batch_execute(&format!("DROP EXTENSION lightretriever CASCADE; CREATE EXTENSION lightretriever VERSION '{release}' CASCADE"))
            .unwrap();
        assert_ne!(extension_objects(&mut c), fresh_objects, "{release} should differ from the current version");
        c.execute("SELECT lightretriever.lr_register_model('minilm', $1)", &[&dense_model_dir().to_string_lossy().as_ref()]).unwrap();
        c.batch_execute("ALTER EXTENSION lightretriever UPDATE").unwrap();
        assert_eq!(one::<String>(&mut c, "SELECT extversion FROM pg_extension WHERE extname = 'lightretriever'"), current_version());
        assert_eq!(extension_objects(&mut c), fresh_objects, "{release} updated differs from a fresh install");
        assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM lightretriever.lr_models"), 1, "{release}: the model registry");
    }
}

/// Before 0.8.0, a column renamed or dropped through an inheritance parent was not followed:
/// the child's writes failed (its triggers kept the old name), or its rows could no longer be
/// encoded. The 0.8.0 update follows every table once: the renamed one works again, the one that
/// lost its text column is no longer auto-encoded, its vectors kept.
#[test]
fn the_update_to_0_8_0_repairs_what_0_7_0_did_not_follow() {
    let mut c = fresh_database("lr_e2e_upgrade_follow");
    c.batch_execute(
        "DROP EXTENSION lightretriever CASCADE; CREATE EXTENSION lightretriever VERSION '0.7.0' CASCADE;
         CREATE TABLE renamed_parent (id int PRIMARY KEY, body text);
         CREATE TABLE renamed (PRIMARY KEY (id)) INHERITS (renamed_parent);
         CREATE TABLE dropped_parent (id int PRIMARY KEY, body text);
         CREATE TABLE dropped (PRIMARY KEY (id)) INHERITS (dropped_parent);
         INSERT INTO renamed VALUES (1, 'one'); INSERT INTO dropped VALUES (1, 'one');",
    )
    .unwrap();
    for model in ["minilm", "damaged"] {
        c.execute("SELECT lightretriever.lr_register_model($1, $2)", &[&model, &dense_model_dir().to_string_lossy().as_ref()]).unwrap();
    }
    c.batch_execute(
        "SELECT lightretriever.lr_enable_auto_encoding('renamed', 'body', 'minilm');
         SELECT lightretriever.lr_enable_auto_encoding('dropped', 'body', 'minilm');
         CREATE TABLE unchecked (id int PRIMARY KEY, body text);
         SELECT lightretriever.lr_enable_auto_encoding('unchecked', 'body', 'damaged');
         ALTER TABLE renamed_parent RENAME COLUMN body TO content;
         ALTER TABLE dropped_parent DROP COLUMN body CASCADE;
         -- A table the update cannot check (its model's catalog row is damaged): the update goes
         -- on with a WARNING and leaves that table as it is.
         UPDATE lightretriever.lr_models SET info = '{}' WHERE name = 'damaged';",
    )
    .unwrap();
    // What 0.7.0 left: the rename not followed, writes refused.
    assert_eq!(one::<String>(&mut c, "SELECT text_column::text FROM lightretriever.lr_auto_encodings WHERE source = 'renamed'::regclass"), "body");
    c.batch_execute("INSERT INTO renamed VALUES (2, 'two')").expect_err("0.7.0's triggers name the old column");

    let (mut updater, notices) = notice_connection("lr_e2e_upgrade_follow");
    updater.batch_execute("ALTER EXTENSION lightretriever UPDATE TO '0.8.0'").unwrap();
    let warnings = notices.lock().unwrap().clone();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("lightretriever: dropped lost a column or key it is auto-encoded by before this update"), "{warnings:?}");
    assert!(warnings[1].starts_with("lightretriever: the columns of unchecked could not be checked: "), "{warnings:?}");
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM lightretriever.lr_auto_encodings WHERE source = 'unchecked'::regclass"), 1);
    assert_eq!(one::<String>(&mut c, "SELECT text_column::text FROM lightretriever.lr_auto_encodings WHERE source = 'renamed'::regclass"), "content");
    c.batch_execute("INSERT INTO renamed VALUES (2, 'two')").unwrap();
    // The drain worker encodes it from the renamed column.
    let started = std::time::Instant::now();
    while one::<i64>(&mut c, "SELECT count(body_embedding) FROM renamed WHERE id = 2") == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "row 2 was not encoded");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(one::<bool>(&mut c, "SELECT (body_embedding <-> lightretriever.lr_encode_document(content, 'minilm')) < 1e-5 FROM renamed WHERE id = 2"));
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM lightretriever.lr_auto_encodings WHERE source = 'dropped'::regclass"), 0);
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'dropped'::regclass AND NOT tgisinternal"), 0);
    c.batch_execute("INSERT INTO dropped (id) VALUES (2)").unwrap();
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'dropped'::regclass AND attname = 'body_embedding'"), 1);
}

/// 0.9.0 replaces lr_search (new arguments): privileges of its own on the old one are not carried
/// over, and the update says so with a WARNING instead of silently granting EXECUTE to PUBLIC.
#[test]
fn the_update_to_0_9_0_warns_that_lr_search_privileges_are_reset() {
    let mut c = fresh_database("lr_e2e_upgrade_acl");
    c.batch_execute(
        "DROP EXTENSION lightretriever CASCADE; CREATE EXTENSION lightretriever VERSION '0.8.0' CASCADE;
         REVOKE EXECUTE ON FUNCTION lightretriever.lr_search FROM PUBLIC;",
    )
    .unwrap();
    let (mut updater, notices) = notice_connection("lr_e2e_upgrade_acl");
    updater.batch_execute("ALTER EXTENSION lightretriever UPDATE TO '0.9.0'").unwrap();
    let warnings = notices.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("lightretriever: lr_search had privileges of its own ({postgres=X/postgres})"), "{warnings:?}");
    assert!(one::<bool>(&mut c, "SELECT has_function_privilege('public', 'lightretriever.lr_search'::regproc, 'EXECUTE')"));
    // Without privileges of its own, the update says nothing.
    c.batch_execute("DROP EXTENSION lightretriever CASCADE; CREATE EXTENSION lightretriever VERSION '0.8.0' CASCADE").unwrap();
    notices.lock().unwrap().clear();
    updater.batch_execute("ALTER EXTENSION lightretriever UPDATE TO '0.9.0'").unwrap();
    assert_eq!(*notices.lock().unwrap(), Vec::<String>::new());
}

/// The update to 0.11.0 moves the queues. A write to an auto-encoded table during it waits for
/// it and then queues its row in the new place: none fails (a first version of the update locked
/// only the queues, and a write that reached a moved queue failed, its trigger function naming
/// the queue where it was). The row is then encoded.
#[test]
fn writes_during_the_update_to_0_11_0_wait_and_are_encoded() {
    let db = "lr_e2e_upgrade_writes";
    let mut c = fresh_database(db);
    c.batch_execute("DROP EXTENSION lightretriever CASCADE; CREATE EXTENSION lightretriever VERSION '0.10.0' CASCADE").unwrap();
    c.execute("SELECT lightretriever.lr_register_model('minilm', $1)", &[&dense_model_dir().to_string_lossy().as_ref()]).unwrap();
    c.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text);
         CREATE TABLE parts (id int, body text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (100);
         INSERT INTO docs VALUES (1, 'before the update'); INSERT INTO parts VALUES (1, 'before the update');
         SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm');
         SELECT lightretriever.lr_enable_auto_encoding('parts', 'body', 'minilm');",
    )
    .unwrap();
    let mut updater = fresh_connection(db);
    updater.batch_execute("BEGIN; ALTER EXTENSION lightretriever UPDATE TO '0.11.0'").unwrap();
    let writes = ["INSERT INTO docs VALUES (2, 'written during the update')", "INSERT INTO parts_low VALUES (2, 'written during the update')"];
    let writers: Vec<_> = writes
        .iter()
        .map(|&sql| {
            std::thread::spawn(move || {
                let mut w = fresh_connection(db);
                w.batch_execute(sql).map_err(|e| format!("{sql}: {e}"))
            })
        })
        .collect();
    // Both wait for the update's locks.
    let started = std::time::Instant::now();
    while one::<i64>(&mut c, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.query LIKE 'INSERT INTO %'") < 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the writes did not wait for the update");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    updater.batch_execute("COMMIT").unwrap();
    for w in writers {
        w.join().unwrap().unwrap_or_else(|e| panic!("a write during the update failed: {e}"));
    }
    assert_eq!(one::<String>(&mut c, "SELECT extversion FROM pg_extension WHERE extname = 'lightretriever'"), current_version());
    for table in ["docs", "parts"] {
        wait_for_encoding(&mut c, table, 120);
        let (rows, right): (i64, i64) = {
            let r = c
                .query_one(
                    &format!(
                        "SELECT count(*), count(*) FILTER (WHERE body_embedding = lightretriever.lr_encode_document(body, 'minilm')) FROM {table}"
                    ),
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!((rows, right), (2, 2), "{table}: every row encoded, to its own text's vector");
    }
    assert_eq!(
        one::<i64>(&mut c, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'lr_queue_%' AND schemaname <> 'lightretriever_queues'"),
        0
    );
}
