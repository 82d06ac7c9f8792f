-- lightretriever 0.1.0 → 0.2.0 (ALTER EXTENSION lightretriever UPDATE). Catalog tables,
-- queues and files are unchanged; tests/e2e/tests/upgrade.rs checks that the result equals a
-- fresh 0.2.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.2.0'" to load this file. \quit

-- Test-only helpers leave the shipped SQL (pg_test builds still create them).
DROP FUNCTION "lr_vector_roundtrip"(vector);
DROP FUNCTION "lr_sparsevec_roundtrip"(sparsevec);

-- Pause and resume auto-encoding (lr_auto_encodings.status 'paused' existed, nothing set it).
CREATE  FUNCTION "lr_pause_auto_encoding"(
	"source" regclass /* Option < pgrx :: PgRelation > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_pause_auto_encoding_wrapper';

CREATE  FUNCTION "lr_resume_auto_encoding"(
	"source" regclass /* Option < pgrx :: PgRelation > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_resume_auto_encoding_wrapper';
