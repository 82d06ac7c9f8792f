//! Citus: the catalog on every node. A query on a distributed table runs on the worker nodes,
//! and `lr_encode_query` there reads that node's own catalog (a reference table cannot be read
//! from inside a shard's query: Citus refuses nested distributed execution), so the coordinator's
//! models, query tables (with their bytes) and sparse weights are copied into every worker's
//! extension catalog by `lr_sync_nodes`, through Citus's own connections
//! (`master_run_on_worker`). A version's chunks go before its row, so a node never sees a version
//! it cannot write its file from.

use std::collections::{BTreeMap, BTreeSet};

use pgrx::prelude::*;
use pgrx::{search_path, PgMemoryContexts};

use crate::error::{raise, require_superuser, row_or_none, Code, OrRaise};

type Node = (String, i32);
/// (model, instruction, version, checksum): what identifies a table version's bytes.
type VersionKey = (String, String, i32, String);

/// This node's Citus group (0: the coordinator); None without Citus in this database.
fn citus_group() -> Option<i32> {
    let citus = crate::spi::read_one::<bool>(
        "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NOT NULL AND pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL",
        &[],
    )
    .ok()
    .flatten()
        == Some(true);
    if !citus {
        return None;
    }
    crate::spi::read_one::<i32>("SELECT groupid FROM pg_catalog.pg_dist_local_group", &[]).ok().flatten()
}

/// The active worker nodes (primaries) when this server is a Citus coordinator; None when Citus
/// is not installed in this database or this is not its coordinator.
fn worker_nodes() -> Option<Vec<Node>> {
    if citus_group() != Some(0) {
        return None;
    }
    Some(
        Spi::connect(|c| {
            c.select(
                "SELECT nodename, nodeport FROM pg_catalog.pg_dist_node
                  WHERE isactive AND noderole OPERATOR(pg_catalog.=) 'primary' AND groupid OPERATOR(pg_catalog.<>) 0
                  ORDER BY nodename, nodeport",
                None,
                &[],
            )?
            .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i32>(2)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .or_raise(Code::ERRCODE_INTERNAL_ERROR),
    )
}

/// The hint of a "not registered" or "no query table" error on a Citus worker node, where the
/// catalog is the coordinator's copy; None elsewhere.
pub fn worker_hint() -> Option<&'static str> {
    citus_group().is_some_and(|group| group > 0).then_some(
        "This is a Citus worker node: its models and tables are copies of the coordinator's. Register and build on the coordinator, then run SELECT * FROM lightretriever.lr_sync_nodes() there.",
    )
}

/// Tells a superuser who just changed the catalog on a Citus coordinator that the worker nodes
/// keep the previous state until `lr_sync_nodes` runs (after this transaction commits: the
/// copy goes through other connections, which see only committed rows).
pub fn remind_to_sync() {
    if worker_nodes().is_some_and(|n| !n.is_empty()) {
        pgrx::notice!(
            "lightretriever: Citus worker nodes keep their previous models and query tables until SELECT lightretriever.lr_sync_nodes() runs after this transaction commits"
        );
    }
}

/// Runs `commands[i]` on `nodes[i]` (in parallel, each in its own transaction); every failure is
/// an error naming the node. Returns each node's result text.
fn run_on(nodes: &[Node], commands: Vec<String>) -> BTreeMap<Node, String> {
    if nodes.is_empty() {
        return BTreeMap::new();
    }
    let names: Vec<String> = nodes.iter().map(|n| n.0.clone()).collect();
    let ports: Vec<i32> = nodes.iter().map(|n| n.1).collect();
    let rows = Spi::connect(|c| {
        c.select(
            "SELECT node_name, node_port, success, result FROM pg_catalog.master_run_on_worker($1, $2, $3, true)",
            None,
            &[names.into(), ports.into(), commands.into()],
        )?
        .map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<i32>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let mut out = BTreeMap::new();
    for (name, port, success, result) in rows {
        if !success {
            raise(
                Code::ERRCODE_CONNECTION_FAILURE,
                format!("lightretriever: copying the catalog to Citus node {name}:{port} failed: {result}"),
                Some("Nothing is half-copied: run lightretriever.lr_sync_nodes() again once the node is back (it copies what is missing)."),
            );
        }
        out.insert((name, port), result);
    }
    out
}

/// One SQL text computed here (the coordinator quotes every value itself: %L of format()).
/// (`read_text`: a chunk's command is 2 MiB of text, which must not stay until the call ends).
fn format_here(sql: &'static str, args: &[pgrx::datum::DatumWithOid]) -> String {
    crate::spi::read_text(sql, args).or_raise(Code::ERRCODE_INTERNAL_ERROR).unwrap_or_default()
}

const VERSIONS_SQL: &str = "SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_array(model, instruction, version, checksum)), '[]')::pg_catalog.text
                              FROM lightretriever.lr_query_tables";

fn parse_versions(json: &str) -> BTreeSet<VersionKey> {
    serde_json::from_str::<Vec<(String, String, i32, String)>>(json).or_raise(Code::ERRCODE_INTERNAL_ERROR).into_iter().collect()
}

fn versions_json(keys: &BTreeSet<&VersionKey>) -> String {
    let rows: Vec<serde_json::Value> =
        keys.iter().map(|(m, i, v, _)| serde_json::json!({"model": m, "instruction": i, "version": v})).collect();
    serde_json::Value::Array(rows).to_string()
}

/// Copies this coordinator's catalog — models, query tables with their bytes, sparse query
/// weights — into the extension catalog of every active Citus worker node, so that queries
/// pushed down to the shards (`ORDER BY emb <#> lr_encode_query($1)` on a distributed table)
/// find the same models and tables there. Idempotent: only what a node lacks is sent (a
/// table's bytes once per node), and what the coordinator no longer has is removed. Run it as a
/// superuser after registering, building, fitting or dropping on the coordinator (those
/// functions remind you), and after adding a node. Returns one row per node.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_sync_nodes() -> TableIterator<'static, (name!(node, String), name!(port, i32), name!(versions_removed, i64), name!(versions_added, i64), name!(chunks_sent, i64))>
{
    require_superuser("copy the catalog to Citus nodes");
    let Some(nodes) = worker_nodes() else {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            "lightretriever: lr_sync_nodes runs on a Citus coordinator, and this server is not one (in this database)".to_owned(),
            Some("Install Citus (CREATE EXTENSION citus) and add worker nodes; then run it on the coordinator."),
        )
    };
    // One copy at a time, of a catalog no build changes meanwhile (builds and lookups of other
    // kinds go on: this lock conflicts only with writes of chunks, and with itself).
    Spi::run("LOCK TABLE lightretriever.lr_query_table_chunks IN SHARE ROW EXCLUSIVE MODE").or_raise(Code::ERRCODE_INTERNAL_ERROR);
    // Floats (sparse weights) travel as text: every digit, whatever the session asked for.
    let float_digits = crate::spi::set_local("extra_float_digits", "3");
    let here = parse_versions(&format_here(VERSIONS_SQL, &[]));
    let there: BTreeMap<Node, BTreeSet<VersionKey>> =
        run_on(&nodes, vec![VERSIONS_SQL.to_owned(); nodes.len()]).into_iter().map(|(n, json)| (n, parse_versions(&json))).collect();

    // 1. Versions the coordinator does not have (dropped, or built again after a re-registration),
    //    with their chunks, and chunks of no version the coordinator has (a copy cut short).
    let keep = versions_json(&here.iter().collect());
    let mut removed: BTreeMap<Node, i64> = BTreeMap::new();
    let commands: Vec<String> = nodes
        .iter()
        .map(|n| {
            let stale: BTreeSet<&VersionKey> = there[n].iter().filter(|k| !here.contains(*k)).collect();
            removed.insert(n.clone(), stale.len() as i64);
            format_here(
                "SELECT pg_catalog.format(
                   'DELETE FROM lightretriever.lr_query_tables t USING pg_catalog.json_to_recordset(%L) x(model text, instruction text, version int)
                     WHERE t.model = x.model AND t.instruction = x.instruction AND t.version = x.version;
                    DELETE FROM lightretriever.lr_query_table_chunks c
                     WHERE NOT EXISTS (SELECT FROM pg_catalog.json_to_recordset(%L) x(model text, instruction text, version int)
                                        WHERE c.model = x.model AND c.instruction = x.instruction AND c.version = x.version)
                        OR EXISTS (SELECT FROM pg_catalog.json_to_recordset(%L) x(model text, instruction text, version int)
                                    WHERE c.model = x.model AND c.instruction = x.instruction AND c.version = x.version)',
                   $1, $2, $1)",
                &[versions_json(&stale).into(), keep.as_str().into()],
            )
        })
        .collect();
    run_on(&nodes, commands);

    // 2. Models: the coordinator's, as they are (a drop removes the node's tables by cascade).
    let models = format_here(
        "SELECT pg_catalog.format(
           'DELETE FROM lightretriever.lr_models WHERE name <> ALL (%L::text[]);
            INSERT INTO lightretriever.lr_models SELECT * FROM pg_catalog.json_populate_recordset(NULL::lightretriever.lr_models, %L)
            ON CONFLICT (name) DO UPDATE SET path = EXCLUDED.path, family = EXCLUDED.family, architecture = EXCLUDED.architecture,
              hidden_size = EXCLUDED.hidden_size, vocab_size = EXCLUDED.vocab_size, max_length = EXCLUDED.max_length,
              pooling = EXCLUDED.pooling, has_lm_head = EXCLUDED.has_lm_head, options = EXCLUDED.options, info = EXCLUDED.info,
              registered_at = EXCLUDED.registered_at, registered_by = EXCLUDED.registered_by',
           (SELECT COALESCE(pg_catalog.array_agg(name), '{}') FROM lightretriever.lr_models),
           (SELECT COALESCE(pg_catalog.json_agg(m), '[]') FROM lightretriever.lr_models m))",
        &[],
    );
    run_on(&nodes, vec![models; nodes.len()]);

    // 3. Versions a node lacks: their chunks one at a time (each command in its own memory
    //    context: a 1 GB table never sits in memory), then the row that makes the version visible.
    let mut added: BTreeMap<Node, i64> = BTreeMap::new();
    let mut sent: BTreeMap<Node, i64> = BTreeMap::new();
    let mut memory = PgMemoryContexts::new("lightretriever sync chunk");
    for key @ (model, instruction, version, _) in &here {
        let lacking: Vec<Node> = nodes.iter().filter(|n| !there[*n].contains(key)).cloned().collect();
        if lacking.is_empty() {
            continue;
        }
        let chunks = row_or_none(Spi::get_one_with_args::<i32>(
            "SELECT pg_catalog.count(*)::int4 FROM lightretriever.lr_query_table_chunks
              WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2 AND version OPERATOR(pg_catalog.=) $3",
            &[model.as_str().into(), instruction.as_str().into(), (*version).into()],
        ))
        .flatten()
        .unwrap_or(0);
        if chunks == 0 {
            pgrx::warning!(
                "lightretriever: version {version} of the query table of \"{model}\" has no stored bytes here (built before 0.6.0): not copied; run lightretriever.lr_store_query_tables() first"
            );
            continue;
        }
        // Chunks of this version a cut-short copy left there may be of other bytes (the model
        // dropped and built again since, with the same version number): they go first.
        let clear = format_here(
            "SELECT pg_catalog.format('DELETE FROM lightretriever.lr_query_table_chunks WHERE model = %L AND instruction = %L AND version = %s',
                                      $1::text, $2::text, $3::int4)",
            &[model.as_str().into(), instruction.as_str().into(), (*version).into()],
        );
        run_on(&lacking, vec![clear; lacking.len()]);
        for chunk in 0..chunks {
            pgrx::check_for_interrupts!();
            // SAFETY: the command text and the SPI results live in a context reset after each chunk.
            unsafe {
                memory.switch_to(|_| {
                    let command = format_here(
                        "SELECT pg_catalog.format('INSERT INTO lightretriever.lr_query_table_chunks VALUES (%L, %L, %s, %s, %L)',
                                                  model, instruction, version, chunk, data)
                           FROM lightretriever.lr_query_table_chunks
                          WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2
                            AND version OPERATOR(pg_catalog.=) $3 AND chunk OPERATOR(pg_catalog.=) $4",
                        &[model.as_str().into(), instruction.as_str().into(), (*version).into(), chunk.into()],
                    );
                    run_on(&lacking, vec![command; lacking.len()]);
                });
                memory.reset();
            }
        }
        let row = format_here(
            "SELECT pg_catalog.format('INSERT INTO lightretriever.lr_query_tables SELECT * FROM pg_catalog.json_populate_record(NULL::lightretriever.lr_query_tables, %L)',
                                      pg_catalog.row_to_json(t))
               FROM lightretriever.lr_query_tables t
              WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2 AND version OPERATOR(pg_catalog.=) $3",
            &[model.as_str().into(), instruction.as_str().into(), (*version).into()],
        );
        run_on(&lacking, vec![row; lacking.len()]);
        for n in &lacking {
            *added.entry(n.clone()).or_default() += 1;
            *sent.entry(n.clone()).or_default() += chunks as i64;
        }
    }

    // 4. Sparse query weights, as the coordinator has them.
    let weights = format_here(
        "SELECT pg_catalog.format(
           'DELETE FROM lightretriever.lr_sparse_query_weights WHERE model <> ALL (%L::text[]);
            INSERT INTO lightretriever.lr_sparse_query_weights SELECT * FROM pg_catalog.json_populate_recordset(NULL::lightretriever.lr_sparse_query_weights, %L)
            ON CONFLICT (model) DO UPDATE SET version = EXCLUDED.version, method = EXCLUDED.method, weights = EXCLUDED.weights,
              tokenizer_fingerprint = EXCLUDED.tokenizer_fingerprint, build = EXCLUDED.build, built_at = EXCLUDED.built_at',
           (SELECT COALESCE(pg_catalog.array_agg(model), '{}') FROM lightretriever.lr_sparse_query_weights),
           (SELECT COALESCE(pg_catalog.json_agg(w), '[]') FROM lightretriever.lr_sparse_query_weights w))",
        &[],
    );
    run_on(&nodes, vec![weights; nodes.len()]);
    crate::spi::set_local("extra_float_digits", &float_digits);

    let rows: Vec<_> = nodes
        .into_iter()
        .map(|n| {
            let (r, a, c) = (removed.get(&n).copied().unwrap_or(0), added.get(&n).copied().unwrap_or(0), sent.get(&n).copied().unwrap_or(0));
            (n.0, n.1, r, a, c)
        })
        .collect();
    TableIterator::new(rows)
}
