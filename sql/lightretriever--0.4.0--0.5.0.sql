-- lightretriever 0.4.0 → 0.5.0 (ALTER EXTENSION lightretriever UPDATE): auto-encoding triggers
-- re-enqueue a row whose vector an UPDATE erased (NULL written over it, the text unchanged: an
-- ORM saving a whole row it read before the worker wrote the vector), so nothing stays without
-- a vector. Every auto-encoded table's trigger functions and triggers are regenerated here.
-- lr_encoding_status gains `eta`, the time its backlog takes at the recent rate; the view
-- lr_progress shows running builds and fits (stage, fraction, the stage's remaining time). The
-- encode functions get planner costs. Otherwise
-- catalog tables, queues (pending and failed rows), vectors and files are unchanged.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.5.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.5.0'" to load this file. \quit

-- Re-creates every auto-encoded table's trigger functions and triggers as this release makes them.
CREATE  FUNCTION "lr_regenerate_auto_encoding_triggers"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_regenerate_auto_encoding_triggers_wrapper';

SELECT lightretriever.lr_regenerate_auto_encoding_triggers();

-- The status view gains its last column, eta.
CREATE OR REPLACE VIEW lr_encoding_status AS
    SELECT source::pg_catalog.regclass AS source, model, sparse_model, status, pending, in_flight, failed, done,
           rows_per_second, last_error, last_error_at, worker_pid,
           -- The backlog at the recent rate: 0 when there is none, NULL while nothing is being
           -- encoded (paused, broken, or no batch in the last minute).
           CASE WHEN (pending OPERATOR(pg_catalog.+) in_flight) OPERATOR(pg_catalog.=) 0 THEN '0'::pg_catalog.interval
                WHEN status OPERATOR(pg_catalog.=) 'active' AND rows_per_second OPERATOR(pg_catalog.>) 0
                THEN pg_catalog.make_interval(secs => pg_catalog.ceil((pending OPERATOR(pg_catalog.+) in_flight)::pg_catalog.float8
                                                                      OPERATOR(pg_catalog./) rows_per_second))
           END AS eta
      FROM lightretriever.lr_encoding_status_rows();

-- Builds and fits running now (lr_progress reads them).
CREATE  FUNCTION "lr_progress_rows"() RETURNS TABLE (
	"pid" INT,  /* i32 */
	"operation" TEXT,  /* String */
	"model" TEXT,  /* String */
	"instruction" TEXT,  /* String */
	"stage" TEXT,  /* String */
	"fraction" double precision,  /* f64 */
	"done" bigint,  /* core::option::Option<i64> */
	"total" bigint,  /* core::option::Option<i64> */
	"started_at" TEXT,  /* core::option::Option<alloc::string::String> */
	"stage_started_at" TEXT  /* core::option::Option<alloc::string::String> */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_progress_rows_wrapper';

-- Builds and fits running now, in any session (lr_progress_rows reads their progress files):
-- one row per backend and operation, as PostgreSQL's pg_stat_progress_* views show theirs.
CREATE VIEW lr_progress AS
    SELECT pid, operation, model, instruction, stage, fraction, done, total,
           started_at::pg_catalog.timestamptz AS started_at,
           -- The stage's remaining time at its pace so far (NULL until it has moved).
           CASE WHEN fraction OPERATOR(pg_catalog.>) 0 AND fraction OPERATOR(pg_catalog.<) 1
                THEN (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) stage_started_at::pg_catalog.timestamptz)
                     OPERATOR(pg_catalog.*) ((1::pg_catalog.float8 OPERATOR(pg_catalog.-) fraction) OPERATOR(pg_catalog./) fraction)
           END AS stage_eta
      FROM lightretriever.lr_progress_rows();
GRANT SELECT ON lr_progress TO PUBLIC;

-- Planner costs (units of cpu_operator_cost): a full-model encode runs for milliseconds, a lookup
-- for microseconds. With the default of 1 the planner chose to sort a small table by
-- emb <#> lr_encode_document(q), encoding the query once per row, over the HNSW index.
ALTER FUNCTION lr_encode_document(text, text) COST 400000;
ALTER FUNCTION lr_encode_documents(text[], text) COST 400000;
ALTER FUNCTION lr_encode_document_sparse(text, text) COST 400000;
ALTER FUNCTION lr_encode_documents_sparse(text[], text) COST 400000;
ALTER FUNCTION lr_encode_query(text, text, text) COST 200;
ALTER FUNCTION lr_encode_query_sparse(text, text, text) COST 200;
