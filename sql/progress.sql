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
