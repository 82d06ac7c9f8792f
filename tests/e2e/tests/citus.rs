//! Issue 15, item 3: Citus. A coordinator and two worker nodes on this machine
//! (scripts/citus_cluster.sh, started by scripts/e2e.sh: LR_CITUS_PGHOST, LR_CITUS_PGPORT), with
//! lightretriever on all three. A distributed table answers as the same rows in a local table:
//! lr_search (its query encoded once, on the coordinator), hand-written HNSW queries (encoded on
//! every worker, from the catalog lr_sync_nodes copied there), lr_rerank.

use lr_e2e::*;
use postgres::{Client, NoTls};

/// Node 0 is the coordinator, 1 and 2 the workers (ports one and two up, sockets beside).
fn node(i: u16) -> Client {
    let host = std::env::var("LR_CITUS_PGHOST").expect("LR_CITUS_PGHOST is set by scripts/e2e.sh (run `make test-e2e`)");
    let port: u16 = std::env::var("LR_CITUS_PGPORT").expect("LR_CITUS_PGPORT").parse().unwrap();
    let host = host.replace(&port.to_string(), &(port + i).to_string());
    Client::connect(&format!("host={host} port={} user=postgres dbname=postgres", port + i), NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to Citus node {i} at {host}:{}: {e}", port + i))
}

fn coordinator() -> Client {
    node(0)
}

/// The lookup vector of `q` on node `i`.
fn lookup_on(i: u16, q: &str) -> String {
    node(i).query_one("SELECT lightretriever.lr_encode_query($1, 'tl')::text", &[&q]).unwrap().get(0)
}

/// The hand-written search on the dense column: answered on every shard's node.
fn hand_written(c: &mut Client, table: &str) -> Result<Vec<String>, String> {
    SEARCH_QUERIES
        .iter()
        .map(|q| {
            c.query_one(
                &format!("SELECT string_agg(id::text, ' ') FROM (SELECT id FROM {table} ORDER BY emb <#> lightretriever.lr_encode_query($1, 'tl') LIMIT 5) t"),
                &[q],
            )
            .map(|r| r.get(0))
            .map_err(|e| e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string()))
        })
        .collect()
}

fn sync(c: &mut Client) -> Vec<(String, i32, i64, i64, i64)> {
    c.query("SELECT node, port, versions_removed, versions_added, chunks_sent FROM lightretriever.lr_sync_nodes() ORDER BY port", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[test]
fn a_distributed_table_answers_as_the_same_rows_in_a_local_table() {
    let mut c = coordinator();
    c.batch_execute(
        "DROP SCHEMA IF EXISTS lr_citus CASCADE;
         DROP EXTENSION IF EXISTS lightretriever CASCADE;
         CREATE EXTENSION lightretriever CASCADE;
         CREATE SCHEMA lr_citus;
         CREATE TABLE lr_citus.docs (id bigint PRIMARY KEY, body text, emb vector(64), sparse sparsevec(30522), pe vector(32));
         SELECT create_distributed_table('lr_citus.docs', 'id');",
    )
    .unwrap();
    let shards: i64 = c.query_one("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'lr_citus.docs'::regclass", &[]).unwrap().get(0);
    assert!(shards >= 2, "{shards} shards");
    search_corpus(&mut c, "lr_citus.docs");
    search_corpus(&mut c, "lr_citus.local_docs");
    let local = search_answers("lr_citus.local_docs", &mut c);

    // Before any copy the workers have no model: lr_search works all the same (the query is
    // encoded once, on the coordinator, and sent to the shards as a constant), a hand-written
    // query that calls lr_encode_query on the shards does not.
    let (msg, _) = error_of(&mut c, "SELECT id FROM lr_citus.docs ORDER BY emb <#> lightretriever.lr_encode_query('river', 'tl') LIMIT 3");
    assert_eq!(msg, "lightretriever: model \"tl\" is not registered");
    for mode in ["dense", "sparse", "hybrid"] {
        let search = |c: &mut Client, table: &str| -> String {
            c.query_one(
                &format!(
                    "SELECT string_agg(id || ':' || score, ' ' ORDER BY score DESC, id) FROM lightretriever.lr_search('{table}', 'the river library', k => 8,
                            mode => '{mode}', model => 'tl', sparse_model => 'splade', dense_column => 'emb', sparse_column => 'sparse')"
                ),
                &[],
            )
            .unwrap()
            .get(0)
        };
        assert_eq!(search(&mut c, "lr_citus.docs"), search(&mut c, "lr_citus.local_docs"), "{mode}");
    }

    // The catalog copied to both workers: everything answers as the local table does.
    let copied = sync(&mut c);
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied.iter().all(|n| n.2 == 0 && n.3 == 1 && n.4 >= 1), "each worker got the one table version: {copied:?}");
    assert_eq!(search_answers("lr_citus.docs", &mut c), local);
    let again = sync(&mut c);
    assert!(again.iter().all(|n| n.2 == 0 && n.3 == 0 && n.4 == 0), "a second copy sends nothing: {again:?}");

    // A new version on the coordinator: workers keep the previous one until the next copy.
    let q = SEARCH_QUERIES[0];
    let before = lookup_on(0, q);
    assert_eq!((lookup_on(1, q), lookup_on(2, q)), (before.clone(), before.clone()));
    c.batch_execute("SELECT lightretriever.lr_build_query_table('tl', dtype => 'f16')").unwrap();
    let rebuilt = lookup_on(0, q);
    assert_ne!(rebuilt, before, "an f16 table gives other vectors: the checks below would prove nothing");
    assert_eq!(lookup_on(1, q), before, "a worker serves the version it has until the next copy");
    let copied = sync(&mut c);
    assert!(copied.iter().all(|n| n.2 == 0 && n.3 == 1), "{copied:?}");
    assert_eq!((lookup_on(1, q), lookup_on(2, q)), (rebuilt.clone(), rebuilt));
    assert_eq!(search_answers("lr_citus.docs", &mut c), search_answers("lr_citus.local_docs", &mut c));

    // Auto-encoding a distributed table is refused before it changes anything (README, "Citus").
    c.batch_execute("CREATE TABLE lr_citus.notes (id int PRIMARY KEY, body text); SELECT create_distributed_table('lr_citus.notes', 'id')").unwrap();
    let (msg, hint) = error_of(&mut c, "SELECT lightretriever.lr_enable_auto_encoding('lr_citus.notes', 'body', 'tl')");
    assert_eq!(msg, "lightretriever: lr_citus.notes is a Citus table, which lr_enable_auto_encoding does not support");
    assert!(hint.unwrap().contains("lr_encode_document"));
    let columns: i64 = c.query_one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'lr_citus.notes'::regclass AND attnum > 0", &[]).unwrap().get(0);
    assert_eq!(columns, 2);

    // A model dropped on the coordinator is dropped on the workers by the next copy.
    c.batch_execute("SELECT lightretriever.lr_drop_model('tl')").unwrap();
    sync(&mut c);
    let err = hand_written(&mut c, "lr_citus.docs").unwrap_err();
    assert_eq!(err, "lightretriever: model \"tl\" is not registered");
    c.batch_execute("DROP SCHEMA lr_citus CASCADE").unwrap();
}
