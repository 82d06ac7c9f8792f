//! `lr_search`: dense, sparse or hybrid search over a user table in one call. Candidates come
//! from pgvector's `<#>` (so HNSW indexes serve them); fusion is `lr-search`'s, the same code the
//! evaluation harness ranks with.

use lr_search::{Feedback, Fusion, Mode, Normalisation, Smoothing};
use pgrx::prelude::*;
use pgrx::{search_path, PgRelation};

use crate::error::{raise, required, Code, OrRaise};
use crate::columns::{pick_column, pick_id_column};
use crate::foreign_guard::scanning;
use crate::spi::table_name;
use crate::pgvector::{SparseVec, Vector};

/// The most candidates one side may ask for.
const MAX_CANDIDATES: i32 = 100_000;

/// `OPERATOR(<pgvector's schema>.op)`: pgvector's operator whatever the search path.
fn pgvector_operator(op: &str) -> String {
    let schema = crate::spi::read_one::<String>("SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) 'vector'",
        &[],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_OBJECT, "lightretriever: pgvector is not installed", None));
    format!("OPERATOR({schema}.{op})")
}

/// The `candidates` best rows of one side, best first: `(id, similarity)` where similarity is
/// the inner product (pgvector's `<#>`, passed as `ip` from [`pgvector_operator`], is its
/// negation). With `matching_only`, rows scoring 0 or
/// less are not candidates (a sparse row sharing no term with the query was not retrieved and
/// must not dilute the side's normalisation; the extension's sparse vectors are never negative,
/// so 0 or less means no shared term).
fn candidates_by(relid: pg_sys::Oid, id: &str, column: &str, ip: &str, query: pgrx::datum::DatumWithOid, candidates: i32, matching_only: bool) -> Vec<(i64, f32)> {
    let table = &crate::security::name_for_scan(relid);
    // Filtered here, not in SQL: dropping the non-matching rows keeps the same rows without
    // computing the distance twice per row.
    let sql = format!(
        "SELECT {id}::pg_catalog.int8, (OPERATOR(pg_catalog.-) ({column} {ip} $1))::pg_catalog.float4 FROM {table}
          WHERE {column} IS NOT NULL AND {id} IS NOT NULL ORDER BY {column} {ip} $1 LIMIT $2"
    );
    let mut rows: Vec<(i64, f32)> = scanning(relid, table, "lr_search", || {
        Spi::connect(|c| {
            c.select(&sql, None, &[query, candidates.into()]).map(|rows| {
                rows.filter_map(|r| Some((r.get::<i64>(1).ok()??, r.get::<f32>(2).ok()??)))
                    .filter(|&(_, score)| !matching_only || score > 0.0)
                    .collect()
            })
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    // An iterative index scan in relaxed order returns rows nearly, not exactly, best first.
    // Non-finite scores last, as PostgreSQL's ORDER BY put NaN (total_cmp puts a positive NaN first).
    let key = |score: f32| if score.is_finite() { score } else { f32::NEG_INFINITY };
    rows.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0)));
    rows
}

/// pgvector settings changed for this call's scans, with the values to put back.
struct ScanSettings(Vec<(&'static str, String)>);

impl ScanSettings {
    /// Index scans that return the candidates asked for. An HNSW scan stops at `hnsw.ef_search`
    /// rows (widened here up to pgvector's maximum, 1000), an IVFFlat scan at its probes' lists,
    /// and rows filtered after the scan (row-level security, a NULL id) shorten the list further:
    /// pgvector's iterative scans (0.8 and later) go on until LIMIT is met, up to their
    /// `max_scan_tuples` / `max_probes`. Relaxed order: `candidates_by` sorts what comes back.
    fn widen(candidates: i32) -> ScanSettings {
        // Unset until pgvector's library is loaded, which this backend may not have done yet.
        crate::pgvector::load_library();
        let settings = ["hnsw.ef_search", "hnsw.iterative_scan", "ivfflat.iterative_scan"];
        let (ef, hnsw_iterative, ivfflat_iterative) = crate::spi::read_three::<String, String, String>(
            "SELECT pg_catalog.current_setting($1, true), pg_catalog.current_setting($2, true), pg_catalog.current_setting($3, true)",
            &[settings[0].into(), settings[1].into(), settings[2].into()],
        )
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
        let mut wanted: Vec<(&'static str, String, String)> = Vec::new();
        let ef_wanted = candidates.min(1000);
        if let Some(old) = ef.filter(|v| v.parse::<i32>().is_ok_and(|v| v < ef_wanted)) {
            wanted.push((settings[0], ef_wanted.to_string(), old));
        }
        for (name, current) in [(settings[1], hnsw_iterative), (settings[2], ivfflat_iterative)] {
            if current.as_deref() == Some("off") {
                wanted.push((name, "relaxed_order".to_string(), "off".to_string()));
            }
        }
        Self::set(wanted.iter().map(|(name, value, _)| (*name, value.as_str())));
        ScanSettings(wanted.into_iter().map(|(name, _, old)| (name, old)).collect())
    }

    /// Sets every (name, value) for the rest of the transaction, in one statement.
    fn set<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) {
        let (names, values): (Vec<String>, Vec<String>) = pairs.map(|(n, v)| (n.to_string(), v.to_string())).unzip();
        if names.is_empty() {
            return;
        }
        Spi::connect(|c| {
            c.select(
                "SELECT pg_catalog.set_config(s.name, s.value, true) FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS s(name, value)",
                None,
                &[names.into(), values.into()],
            )
            .map(|rows| rows.count())
        })
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    }

    /// Puts the settings back as they were for the rest of the transaction.
    fn restore(self) {
        Self::set(self.0.iter().map(|(name, old)| (*name, old.as_str())));
    }
}

/// The stored dense vectors of the rows `ids` (feedback and smoothing documents), with their
/// ids, in any order: one per id, at most `ids.len()` (an id column that is not unique must not
/// pull in more rows; of its rows, the one the dense side ranks first against `query`, as fusion
/// keeps an id's best entry).
fn vectors_of(relid: pg_sys::Oid, id: &str, column: &str, ip: &str, query: &[f32], ids: &[i64]) -> Vec<(i64, Vec<f32>)> {
    let table = &crate::security::name_for_scan(relid);
    let sql = format!(
        "SELECT DISTINCT ON ({id}) {id}::pg_catalog.int8, {column} FROM {table}
          WHERE {id} OPERATOR(pg_catalog.=) ANY($1) AND {column} IS NOT NULL ORDER BY {id}, {column} {ip} $3 LIMIT $2"
    );
    // Made before the scan: making one may look up pgvector's type, a statement of its own.
    let args = [ids.to_vec().into(), (ids.len() as i64).into(), Vector(query.to_vec()).into()];
    scanning(relid, table, "lr_search", || {
        Spi::connect(|c| {
            c.select(&sql, None, &args).map(|rows| {
                rows.filter_map(|r| Some((r.get::<i64>(1).ok().flatten()?, r.get::<Vector>(2).ok().flatten()?.0))).collect()
            })
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The most rows smoothing reads the stored vectors of: the similarity product, rows²/2 × D, is
/// not interrupted (200 rows of pgvector's widest, 16,000 dimensions: 0.32 G multiply-adds); the
/// default is 50.
const MAX_SMOOTHING: i32 = 200;

/// `lr_search`'s smoothing arguments, checked.
fn smoothing_of(documents: i32, neighbours: i32, weight: f32) -> Smoothing {
    if !(0..=MAX_SMOOTHING).contains(&documents) {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: smoothing must be between 0 and {MAX_SMOOTHING} rows (0: no smoothing)"),
            None,
        );
    }
    if neighbours < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: smoothing_neighbours must be positive", None);
    }
    if !(weight.is_finite() && weight >= 0.0) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: smoothing_weight must be a finite number, 0 or more", None);
    }
    Smoothing { documents: documents as usize, neighbours: neighbours as usize, weight }
}

/// Searches `source` for `query`: dense (lookup-encoded query against the `vector` column),
/// sparse (token counts against the `sparsevec` column) or hybrid: each side's `candidates`
/// normalised per query by `fusion` (`zscore`, `minmax` as published, or `rrf`) and fused
/// `dense_weight·dense + (1−dense_weight)·sparse`. With `feedback` > 0 (and a dense side), the
/// query vector then takes one Rocchio step of `feedback_weight` toward the mean stored vector of
/// the top `feedback` rows, and the dense side is searched again with it (no model at query
/// time). In hybrid mode the top `smoothing` rows of the fused ranking are then reranked by score
/// smoothing over their own graph: each row's fused score is averaged, with `smoothing_weight`,
/// with the mean fused score of its `smoothing_neighbours` nearest rows among them (cosine of
/// their stored dense vectors). The defaults were chosen label-free (docs/quality.md);
/// LightRetriever's published setting is `fusion => 'minmax', smoothing => 0`.
/// Scores of the sides are the raw inner products, NULL where a row was not a candidate there.
/// With `rerank` > 0 the top `rerank` hits are reranked by the PE-Rank reranker `rerank_model`
/// (else `lightretriever.default_reranker`; passage embeddings by `lr_rerank`'s rule): rows then
/// come in the reranker's order, with its score as `rerank_score` (NULL for the rows after them).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // every name below is qualified; nothing resolves through the caller's path
fn lr_search(
    source: Option<PgRelation>,
    query: Option<&str>,
    k: default!(Option<i32>, 10),
    mode: default!(Option<&str>, "'hybrid'"),
    dense_weight: default!(Option<f32>, 0.7),
    candidates: default!(Option<i32>, 1000),
    dense_column: default!(Option<&str>, "NULL"),
    sparse_column: default!(Option<&str>, "NULL"),
    id_column: default!(Option<&str>, "NULL"),
    model: default!(Option<&str>, "NULL"),
    sparse_model: default!(Option<&str>, "NULL"),
    instruction: default!(Option<&str>, "NULL"),
    rerank: default!(Option<i32>, 0),
    rerank_model: default!(Option<&str>, "NULL"),
    fusion: default!(Option<&str>, "'zscore'"),
    feedback: default!(Option<i32>, 0),
    feedback_weight: default!(Option<f32>, 0.5),
    smoothing: default!(Option<i32>, 50),
    smoothing_neighbours: default!(Option<i32>, 10),
    smoothing_weight: default!(Option<f32>, 0.5),
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(score, f32),
        name!(dense_score, Option<f32>),
        name!(sparse_score, Option<f32>),
        name!(rerank_score, Option<f32>),
    ),
> {
    let (source, query) = (required(source, "source"), required(query, "query"));
    let (k, candidates) = (required(k, "k"), required(candidates, "candidates"));
    let dense_weight = required(dense_weight, "dense_weight");
    let mode = Mode::parse(required(mode, "mode")).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    if k < 1 || candidates < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: k and candidates must be positive", None);
    }
    if candidates > MAX_CANDIDATES {
        // Each side's candidates are held in the backend's memory (without an index, LIMIT is
        // all a scan returns): a bound, not the size of the caller's table, sets that memory.
        raise(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("lightretriever: candidates is {candidates}; at most {MAX_CANDIDATES} per side"),
            Some("Fusion needs each side's best few hundred rows; the default is 1000."),
        );
    }
    if !(0.0..=1.0).contains(&dense_weight) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: dense_weight must be between 0 and 1", None);
    }
    let normalisation = Normalisation::parse(required(fusion, "fusion")).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let fusion = Fusion { normalisation, dense_weight, depth: usize::MAX };
    let (feedback, feedback_weight) = (required(feedback, "feedback"), required(feedback_weight, "feedback_weight"));
    if !(0..=100).contains(&feedback) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: feedback must be between 0 and 100 rows (0: no feedback)", None);
    }
    if feedback > 0 && mode == Mode::Sparse {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: feedback moves the dense query; mode 'sparse' has none",
            Some("Use mode 'hybrid' or 'dense' with feedback, or leave feedback at 0."),
        );
    }
    if !(feedback_weight.is_finite() && feedback_weight >= 0.0) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: feedback_weight must be a finite number, 0 or more", None);
    }
    let feedback = Feedback { documents: feedback as usize, weight: feedback_weight };
    let smoothing = smoothing_of(required(smoothing, "smoothing"), required(smoothing_neighbours, "smoothing_neighbours"), required(smoothing_weight, "smoothing_weight"));
    let relid = source.oid();
    // Held to the end of the transaction, taken before the checks: without the lock the
    // table's owner could drop or replace it between the checks and the scans. (A schema
    // rename takes no lock on the tables in it: each scan reads the table's name again, just
    // before it runs, so a name read before the lookups below cannot mean another relation.)
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    let table = table_name(relid);
    drop(source);
    // Tables only: a view's or foreign table's code would run as the caller.
    crate::security::require_user_table(relid, &table, &['r', 'p', 'm'], "lr_search", true, true);
    let (id, id_attnum) = pick_id_column(relid, &table, id_column);
    // An auto-encoded table names its own columns and models.
    let auto = crate::auto::encoding_of(relid);
    // Its models only for its own columns: another column may hold another model's vectors,
    // and then `model` (else the default model) says which.
    let auto_dense = auto.as_ref().filter(|a| dense_column.is_none_or(|c| c == a.vector_column));
    let auto_sparse = auto.as_ref().filter(|a| a.sparse_column.is_some() && (sparse_column.is_none() || sparse_column == a.sparse_column.as_deref()));
    let dense_column = dense_column.or(auto_dense.map(|a| a.vector_column.as_str()));
    let sparse_column = sparse_column.or(auto_sparse.and_then(|a| a.sparse_column.as_deref()));
    let model = model.or(auto_dense.map(|a| a.model.as_str()));
    let sparse_model = sparse_model.or(auto_sparse.and_then(|a| a.sparse_model.as_deref()));
    let scans = ScanSettings::widen(candidates);
    let ip = pgvector_operator("<#>");
    // The dense query first (its errors first, as before feedback existed), then the sparse
    // side's candidates once; the dense side is searched once, or twice with feedback.
    let dense_column = if mode != Mode::Sparse { Some(pick_column(relid, &table, dense_column, "vector", "dense_column")) } else { None };
    let dense_query = match mode {
        Mode::Sparse => Vec::new(),
        _ => crate::query::dense::encode_query(query, model, instruction),
    };
    let sparse = if mode != Mode::Dense {
        let column = pick_column(relid, &table, sparse_column, "sparsevec", "sparse_column");
        let q: SparseVec = crate::query::sparse::encode_query_sparse(query, sparse_model, crate::query::sparse::QueryWeighting::Auto);
        candidates_by(relid, &id, &column, &ip, q.into(), candidates, true)
    } else {
        Vec::new()
    };
    let rerank = required(rerank, "rerank");
    if rerank < 0 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: rerank must not be negative (0 reranks nothing)", None);
    }
    let rerank = rerank as usize;
    let column = dense_column.as_deref().unwrap_or_default();
    // Smoothing fetches rows by id: without an index on the id column every call would scan
    // the table, so it is left out, and said so.
    let smoothing = if smoothing.applies(mode) && !crate::columns::id_is_indexed(relid, id_attnum) {
        pgrx::notice!("lightretriever: lr_search does not smooth {table}: its id column {id} has no index (create one, or pass smoothing => 0)");
        Smoothing::NONE
    } else {
        smoothing
    };
    let request = lr_search::Request { query: &dense_query, sparse: &sparse, mode, fusion, feedback, smoothing, k: (k as usize).max(rerank) };
    let hits = lr_search::search::<std::convert::Infallible>(
        &request,
        |q| Ok(candidates_by(relid, &id, column, &ip, Vector(q.to_vec()).into(), candidates, false)),
        |ids| Ok(vectors_of(relid, &id, column, &ip, &dense_query, ids)),
    )
    .unwrap_or_else(|never| match never {});
    scans.restore();
    let mut rows: Vec<_> = hits.into_iter().map(|h| (h.id, h.score, h.dense, h.sparse, None)).collect();
    if rerank > 0 && !rows.is_empty() {
        // The top `rerank` hits in the reranker's order, then the rest in the fused order.
        let top: Vec<i64> = rows.iter().take(rerank).map(|r| r.0).collect();
        let (name, info) = crate::rerank::reranker(rerank_model);
        let columns = crate::rerank::passages::Columns { embedding: None, text: None, id: id_column };
        let order = crate::rerank::passages::rerank_rows(&name, &info, Some(relid), query, &top, &columns, lr_rerank::Mode::Embedding, 20, 10);
        let mut reranked: Vec<_> = order
            .iter()
            .map(|&(id, score)| {
                let r = rows.iter().find(|r| r.0 == id).expect("reranked ids are the hits'");
                (r.0, r.1, r.2, r.3, Some(score))
            })
            .collect();
        reranked.extend(rows.drain(top.len()..));
        rows = reranked;
    }
    rows.truncate(k as usize);
    TableIterator::new(rows)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgvector::Vector;
    use crate::test_support::*;
    use pgrx::prelude::*;

    fn oid_of(table: &str) -> pg_sys::Oid {
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::pg_catalog.regclass::pg_catalog.oid", &[table.into()]).unwrap().unwrap()
    }

    type Row = (i64, f32, Option<f32>, Option<f32>);

    fn search(sql: &str) -> Vec<Row> {
        Spi::connect(|c| {
            c.select(sql, None, &[])
                .unwrap()
                .map(|r| {
                    (
                        r.get::<i64>(1).unwrap().unwrap(),
                        r.get::<f32>(2).unwrap().unwrap(),
                        r.get::<f32>(3).unwrap(),
                        r.get::<f32>(4).unwrap(),
                    )
                })
                .collect()
        })
    }

    /// A hand-made table whose dense scores against the query are exactly 0.9, 0.5, 0.1, −0.2
    /// (rows are the query's own unit vector scaled) and whose sparse scores are 2, 1, 6, 4.
    #[pg_test]
    fn fused_order_matches_the_hand_computed_one() {
        register_dense_model();
        register_sparse_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("SET LOCAL lightretriever.default_model = 'minilm'").unwrap();
        Spi::run("SET LOCAL lightretriever.default_sparse_model = 'splade'").unwrap();
        Spi::run(r#"CREATE SCHEMA "Search Schema""#).unwrap();
        Spi::run(r#"CREATE TABLE "Search Schema"."My ""Docs""" (doc_id bigint PRIMARY KEY, emb vector(384), sp sparsevec(30522))"#)
            .unwrap();
        let q = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('wing wing flutter')").unwrap().unwrap().0;
        // "wing" = 3358, "flutter" = 23638; the query counts are {3358: 2, 23638: 1}.
        // sparsevec's text form counts indices from 1: token id t is written t + 1.
        let docs = [(1, 0.9, "{23639:2}/30522"), (2, 0.5, "{23639:1}/30522"), (3, 0.1, "{3359:3}/30522"), (4, -0.2, "{3359:2}/30522")];
        for (id, dense, sparse) in docs {
            let emb = Vector(q.iter().map(|x| x * dense as f32).collect());
            Spi::run_with_args(
                r#"INSERT INTO "Search Schema"."My ""Docs""" VALUES ($1, $2, $3::sparsevec)"#,
                &[(id as i64).into(), emb.into(), sparse.into()],
            )
            .unwrap();
        }
        let table = r#"'"Search Schema"."My ""Docs"""'"#;
        // candidates = 3: dense keeps 1, 2, 3 (normalised 1, .5, 0); sparse keeps 3, 4, 1 (1, .5, 0).
        // hybrid 0.7: 1 → .7, 2 → .35, 3 → .3, 4 → .15.
        let hybrid = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', candidates => 3, fusion => 'minmax', smoothing => 0)"));
        let want = [(1, 0.7), (2, 0.35), (3, 0.3), (4, 0.15)];
        assert_eq!(hybrid.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4], "hybrid {hybrid:?}");
        for (row, (_, score)) in hybrid.iter().zip(want) {
            assert!((row.1 - score).abs() < 1e-4, "{row:?} vs {score}");
        }
        assert!((hybrid[0].2.unwrap() - 0.9).abs() < 1e-4 && (hybrid[0].3.unwrap() - 2.0).abs() < 1e-6);
        assert_eq!(hybrid[1].3, None, "2 was not a sparse candidate");
        assert_eq!(hybrid[3].2, None, "4 was not a dense candidate");

        let dense = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', 2, 'dense')"));
        assert_eq!(dense.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2], "dense {dense:?}");
        let sparse = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', mode => 'sparse')"));
        assert_eq!(sparse.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4, 1, 2], "sparse {sparse:?}");
        assert_eq!(sparse[0].2, None);

        // The same through an HNSW index: ef_search is widened to the candidates asked for.
        Spi::run(r#"CREATE INDEX ON "Search Schema"."My ""Docs""" USING hnsw (emb vector_ip_ops)"#).unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        Spi::run("SET LOCAL hnsw.ef_search = 1").unwrap();
        let via_index = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', candidates => 3, fusion => 'minmax', smoothing => 0)"));
        assert_eq!(via_index.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4], "via index {via_index:?}");
        assert_eq!(Spi::get_one::<String>("SELECT current_setting('hnsw.ef_search')").unwrap().as_deref(), Some("1"));

        // The default, z-score fusion: dense .9, .5, .1 → z = √1.5, 0, −√1.5; sparse 6, 4, 2 (rows
        // 3, 4, 1) → √1.5, 0, −√1.5; a row missing from a side gets that side's lowest, −√1.5.
        let r = 1.5f32.sqrt();
        let z = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', candidates => 3, smoothing => 0)"));
        let want = [(1, 0.7 * r - 0.3 * r), (2, -0.3 * r), (3, -0.7 * r + 0.3 * r), (4, -0.7 * r)];
        assert_eq!(z.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4], "z-score {z:?}");
        for (row, (_, score)) in z.iter().zip(want) {
            assert!((row.1 - score).abs() < 1e-4, "{row:?} vs {score}");
        }
        // The default also smooths the top rows: 1, 2 and 3 point along the query, 4 against it
        // (cosine −1, no weight). Each of 1-3 is averaged (weight 0.5) with the mean of the other
        // two: 1 (.4r + .5·(−.35r))/1.5, 2 (−.3r + .5·0)/1.5, 3 (−.4r + .5·.05r)/1.5; 4 keeps −.7r.
        let smoothed = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', candidates => 3)"));
        assert_eq!(smoothed.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4], "smoothed {smoothed:?}");
        for (row, score) in smoothed.iter().zip([0.15 * r, -0.2 * r, -0.25 * r, -0.7 * r]) {
            assert!((row.1 - score).abs() < 1e-4, "{row:?} vs {score}");
        }
        assert_eq!(smoothed.iter().map(|r| (r.2, r.3)).collect::<Vec<_>>(), z.iter().map(|r| (r.2, r.3)).collect::<Vec<_>>(), "raw side scores stay");

        // Smoothing fetches rows by id. Without an index on the id column that would scan the
        // table on every call, so it is left out (with a NOTICE); with one it is back. Of an id
        // listed twice, the row the dense side ranks first is the one whose vector counts: here
        // a second row 1 pointing away from the query (−.9q, no sparse vector).
        // (The stray row goes in first, where a fetch that ignores the scores would find it.)
        Spi::run("CREATE TABLE unindexed (doc_id bigint, emb vector(384), sp sparsevec(30522))").unwrap();
        Spi::run_with_args("INSERT INTO unindexed VALUES (1, $1, NULL)", &[Vector(q.iter().map(|x| -0.9 * x).collect()).into()]).unwrap();
        Spi::run(r#"INSERT INTO unindexed SELECT doc_id, emb, sp FROM "Search Schema"."My ""Docs""""#).unwrap();
        let unindexed = "SELECT * FROM lightretriever.lr_search('unindexed', 'wing wing flutter', candidates => 3, id_column => 'doc_id')";
        assert_eq!(search(unindexed), z, "no index on the id column: not smoothed");
        Spi::run("CREATE INDEX ON unindexed USING hash (doc_id)").unwrap();
        assert_eq!(search(unindexed), smoothed, "smoothed once the id column has an index, with row 1's best row");
        // Reciprocal rank, k = 60, equal weights: 1 and 3 are first and third on opposite sides.
        let rrf = search(&format!("SELECT * FROM lightretriever.lr_search({table}, 'wing wing flutter', candidates => 3, fusion => 'rrf', dense_weight => 0.5, smoothing => 0)"));
        let (a, b) = (0.5 / 61.0 + 0.5 / 63.0, 0.5 / 62.0);
        assert_eq!(rrf.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3, 2, 4], "rrf {rrf:?}");
        for (row, score) in rrf.iter().zip([a, a, b, b]) {
            assert!((row.1 - score).abs() < 1e-6, "{row:?} vs {score}");
        }
    }

    /// Feedback fetches the top rows' stored vectors and searches again: rows at 0°, −45°, 44°
    /// and 60° from the query in one plane rank 1, 3, 2, 4; one Rocchio step toward 1 and 3
    /// (weight 1) turns the query by ≈ 10.6°, and 4 passes 2 (lr-search's own test, in SQL).
    #[pg_test]
    fn feedback_moves_the_query_toward_the_top_rows() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("SET LOCAL lightretriever.default_model = 'minilm'").unwrap();
        Spi::run("CREATE TABLE fb (id int PRIMARY KEY, emb vector(384))").unwrap();
        let q = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('wing wing flutter')").unwrap().unwrap().0;
        // u: the first basis vector made orthogonal to q, unit length.
        let mut u: Vec<f32> = (0..q.len()).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        let dot: f32 = u.iter().zip(&q).map(|(a, b)| a * b).sum();
        u.iter_mut().zip(&q).for_each(|(a, b)| *a -= dot * b);
        let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
        u.iter_mut().for_each(|x| *x /= norm);
        for (id, deg) in [(1, 0.0f32), (2, -45.0), (3, 44.0), (4, 60.0)] {
            let (c, s) = (deg.to_radians().cos(), deg.to_radians().sin());
            let v = Vector(q.iter().zip(&u).map(|(a, b)| c * a + s * b).collect());
            Spi::run_with_args("INSERT INTO fb VALUES ($1, $2)", &[id.into(), v.into()]).unwrap();
        }
        let ids = |sql: &str| search(sql).iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(ids("SELECT * FROM lightretriever.lr_search('fb', 'wing wing flutter', mode => 'dense')"), [1, 3, 2, 4]);
        let moved = search("SELECT * FROM lightretriever.lr_search('fb', 'wing wing flutter', mode => 'dense', feedback => 2, feedback_weight => 1)");
        assert_eq!(moved.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3, 4, 2], "{moved:?}");
        // Raw scores are the moved query's: row 1 at ≈ cos 10.6°.
        assert!((moved[0].2.unwrap() - 10.6f32.to_radians().cos()).abs() < 2e-3, "{moved:?}");
        assert_eq!(ids("SELECT * FROM lightretriever.lr_search('fb', 'wing wing flutter', mode => 'dense', feedback => 2, feedback_weight => 0)"), [1, 3, 2, 4]);
    }

    #[pg_test(error = "lightretriever: unknown fusion \"borda\" (expected minmax, zscore or rrf)")]
    fn unknown_fusions_are_an_error() {
        Spi::run("CREATE TEMP TABLE t (id int PRIMARY KEY, a vector(3))").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('t', 'q', mode => 'dense', fusion => 'borda')").unwrap();
    }

    #[pg_test(error = "lightretriever: t has several vector columns (a, b)")]
    fn ambiguous_columns_are_an_error() {
        Spi::run("CREATE TEMP TABLE t (id int PRIMARY KEY, a vector(3), b vector(3))").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('t', 'q', mode => 'dense')").unwrap();
    }

    #[pg_test(error = "lightretriever: id column \"id\" of t is text; lr_search returns bigint ids")]
    fn text_keys_are_an_error() {
        Spi::run("CREATE TEMP TABLE t (id text PRIMARY KEY, a vector(3))").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('t', 'q', mode => 'dense')").unwrap();
    }

    /// Row-level security filters rows after the index scan. Of 300 random rows the caller
    /// sees the 10 that score worst against the query, so an HNSW scan's first rows
    /// (hnsw.ef_search) are all hidden. The scan goes on (iterative, relaxed order) until it has
    /// the candidates asked for, and they come back best first. (No primary key: the planner
    /// would scan its index for `id IS NOT NULL` instead of the HNSW index.)
    #[pg_test]
    fn hidden_rows_do_not_shorten_the_candidates() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("SET LOCAL lightretriever.default_model = 'minilm'").unwrap();
        let q = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('wing wing flutter')").unwrap().unwrap();
        Spi::run("SELECT setseed(0.5)").unwrap();
        Spi::run("CREATE TABLE tenants (id int, emb vector(384), shared boolean DEFAULT false)").unwrap();
        Spi::run(
            "INSERT INTO tenants SELECT i, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE i >= 0)::real[]::vector
               FROM generate_series(0, 299) i",
        )
        .unwrap();
        Spi::run_with_args("UPDATE tenants SET shared = true WHERE id IN (SELECT id FROM tenants ORDER BY emb <#> $1 DESC LIMIT 10)", &[q.clone().into()])
            .unwrap();
        let want: Vec<i64> = Spi::connect(|c| {
            c.select("SELECT id::int8 FROM tenants WHERE shared ORDER BY emb <#> $1 LIMIT 5", None, &[q.into()])
                .unwrap()
                .map(|r| r.get::<i64>(1).unwrap().unwrap())
                .collect()
        });
        Spi::run("CREATE INDEX ON tenants USING hnsw (emb vector_ip_ops)").unwrap();
        Spi::run("ALTER TABLE tenants ENABLE ROW LEVEL SECURITY").unwrap();
        Spi::run("CREATE POLICY shared_rows ON tenants USING (shared)").unwrap();
        Spi::run("CREATE ROLE lr_tenant").unwrap();
        Spi::run("GRANT SELECT ON tenants TO lr_tenant").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        Spi::run("SET LOCAL hnsw.ef_search = 40").unwrap();
        Spi::run("SET LOCAL ROLE lr_tenant").unwrap();
        let got: Vec<i64> = search("SELECT * FROM lightretriever.lr_search('tenants', 'wing wing flutter', k => 5, mode => 'dense', candidates => 5, id_column => 'id')")
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!((got.len(), &got), (5, &want));
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(Spi::get_one::<String>("SELECT current_setting('hnsw.iterative_scan')").unwrap().as_deref(), Some("off"), "put back");
        assert_eq!(Spi::get_one::<String>("SELECT current_setting('hnsw.ef_search')").unwrap().as_deref(), Some("40"), "put back");
    }

    #[pg_test(error = "lightretriever: candidates is 100001; at most 100000 per side")]
    fn candidates_are_bounded() {
        Spi::run("CREATE TEMP TABLE t (id int PRIMARY KEY, a vector(3))").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('t', 'q', mode => 'dense', candidates => 100001)").unwrap();
    }

    /// A scan of a partitioned table reads every partition: a foreign one is refused, as a
    /// foreign table named directly is.
    #[pg_test(error = "lightretriever: public.parted has a partition or child public.parted_f that is a foreign table")]
    fn foreign_partitions_are_refused() {
        Spi::run("CREATE FOREIGN DATA WRAPPER lr_test_fdw").unwrap();
        Spi::run("CREATE SERVER lr_test_server FOREIGN DATA WRAPPER lr_test_fdw").unwrap();
        Spi::run("CREATE TABLE parted (id int, emb vector(384)) PARTITION BY RANGE (id)").unwrap();
        Spi::run("CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (10)").unwrap();
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("INSERT INTO parted VALUES (1, pg_catalog.array_fill(0.1::real, ARRAY[384])::vector)").unwrap();
        let partitioned = "SELECT count(*) FROM lightretriever.lr_search('parted', 'q', mode => 'dense', id_column => 'id', model => 'minilm', dense_column => 'emb')";
        assert_eq!(Spi::get_one::<i64>(partitioned), Ok(Some(1)), "table partitions are read");
        Spi::run("CREATE FOREIGN TABLE parted_f PARTITION OF parted FOR VALUES FROM (10) TO (20) SERVER lr_test_server").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('parted', 'q', mode => 'dense', id_column => 'id')").unwrap();
    }

    /// The server `lr_files` of file_fdw, a wrapper with a handler: without the planner's guard a
    /// scan plans its tables and reads their files.
    fn file_server() {
        Spi::run("CREATE EXTENSION file_fdw").unwrap();
        Spi::run("CREATE SERVER lr_files FOREIGN DATA WRAPPER file_fdw").unwrap();
    }

    /// A foreign partition attached after `lr_search`'s check (ATTACH PARTITION takes only a
    /// SHARE UPDATE EXCLUSIVE lock on the parent, which a reader does not block) is refused
    /// where the scan is planned, before its wrapper's code runs. The scan is called here as it
    /// would run after such a race: past the check, with the partition there. file_fdw has a
    /// handler, so without the planner's guard the scan plans it and reads its file.
    #[pg_test(error = "lightretriever: public.raced has a partition or child public.raced_f that is a foreign table")]
    fn a_foreign_partition_attached_after_the_check_is_refused_where_the_scan_is_planned() {
        file_server();
        Spi::run("CREATE TABLE raced (id int, emb vector(3)) PARTITION BY RANGE (id)").unwrap();
        Spi::run("CREATE TABLE raced_a PARTITION OF raced FOR VALUES FROM (0) TO (10)").unwrap();
        Spi::run("INSERT INTO raced VALUES (1, '[1,0,0]')").unwrap();
        let ip = super::pgvector_operator("<#>");
        let scan = || super::candidates_by(oid_of("public.raced"), "id", "emb", &ip, Vector(vec![1.0, 0.0, 0.0]).into(), 10, false);
        assert_eq!(scan(), [(1, 1.0)], "table partitions are scanned");
        Spi::run("CREATE FOREIGN TABLE raced_f PARTITION OF raced FOR VALUES FROM (10) TO (20) SERVER lr_files OPTIONS (filename '/dev/null')").unwrap();
        scan();
    }

    /// A foreign table that the table's own row-level security reaches is refused where the
    /// scan is planned, and said to be reached, not to be a partition.
    #[pg_test(error = "lightretriever: lr_search's scan of public.guarded reaches the foreign table public.guard_f")]
    fn a_foreign_table_in_a_policy_is_refused_where_the_scan_is_planned() {
        file_server();
        Spi::run("CREATE FOREIGN TABLE guard_f (id int) SERVER lr_files OPTIONS (filename '/dev/null')").unwrap();
        Spi::run("CREATE TABLE guarded (id int, emb vector(3)); INSERT INTO guarded VALUES (1, '[1,0,0]')").unwrap();
        Spi::run("ALTER TABLE guarded ENABLE ROW LEVEL SECURITY").unwrap();
        Spi::run("CREATE POLICY p ON guarded USING (NOT EXISTS (SELECT FROM guard_f))").unwrap();
        Spi::run("CREATE ROLE lr_guard_reader; GRANT SELECT ON guarded, guard_f TO lr_guard_reader").unwrap();
        Spi::run("SET LOCAL ROLE lr_guard_reader").unwrap();
        let ip = super::pgvector_operator("<#>");
        super::candidates_by(oid_of("public.guarded"), "id", "emb", &ip, Vector(vec![1.0, 0.0, 0.0]).into(), 10, false);
    }

    /// An inheritance child is read by a scan of its parent just the same.
    #[pg_test(error = "lightretriever: public.parent has a partition or child public.child_f that is a foreign table")]
    fn foreign_inheritance_children_are_refused() {
        Spi::run("CREATE FOREIGN DATA WRAPPER lr_test_fdw").unwrap();
        Spi::run("CREATE SERVER lr_test_server FOREIGN DATA WRAPPER lr_test_fdw").unwrap();
        Spi::run("CREATE TABLE parent (id int PRIMARY KEY, emb vector(3))").unwrap();
        Spi::run("CREATE TABLE child_t () INHERITS (parent)").unwrap();
        Spi::run("CREATE FOREIGN TABLE child_f () INHERITS (child_t) SERVER lr_test_server").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('parent', 'q', mode => 'dense')").unwrap();
    }

    /// An auto-encoded table's model goes with its own column only: searching another vector
    /// column of it takes `model`, else the default model (unset here: an error, not the
    /// auto-encoding's model used on vectors it did not make).
    #[pg_test(error = "lightretriever: no model given and lightretriever.default_model is not set")]
    fn another_column_does_not_take_the_auto_encodings_model() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("CREATE TABLE two_cols (id int PRIMARY KEY, body text, other vector(384))").unwrap();
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('two_cols', 'body', 'minilm')").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('two_cols', 'wing', mode => 'dense')").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('two_cols', 'wing', mode => 'dense', dense_column => 'body_embedding')").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('two_cols', 'wing', mode => 'dense', dense_column => 'other', model => 'minilm')").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('two_cols', 'wing', mode => 'dense', dense_column => 'other')").unwrap();
    }

    #[pg_test(error = "lightretriever: unknown search mode \"bm25\" (expected dense, sparse or hybrid)")]
    fn unknown_modes_are_an_error() {
        Spi::run("CREATE TEMP TABLE t (id int PRIMARY KEY, a vector(3))").unwrap();
        Spi::run("SELECT * FROM lightretriever.lr_search('t', 'q', mode => 'bm25')").unwrap();
    }
}
