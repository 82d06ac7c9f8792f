-- lightretriever 0.8.0 → 0.9.0 (ALTER EXTENSION lightretriever UPDATE). lr_search smooths the
-- scores of the fused ranking's top rows over their own graph (docs/quality.md, "Smoothing over
-- the candidates' graph"): three arguments after feedback_weight, `smoothing` (rows, default 50;
-- 0: 0.8.0's ranking), `smoothing_neighbours` (10) and `smoothing_weight` (0.5). A function's
-- arguments cannot change in place, so lr_search is dropped and created again: a view or
-- function of the user's that calls it must be dropped before the update and created again
-- after it. Nothing else changes.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.9.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.9.0'" to load this file. \quit

-- The new function has the default privileges (EXECUTE for PUBLIC): say so where the old one
-- had others, which the update cannot carry over as the user's own.
DO $$
DECLARE
    acl pg_catalog.aclitem[] := (SELECT p.proacl FROM pg_catalog.pg_proc p
        WHERE p.oid OPERATOR(pg_catalog.=) 'lr_search(pg_catalog.regclass, text, integer, text, real, integer, text, text, text, text, text, text, integer, text, text, integer, real)'::pg_catalog.regprocedure);
BEGIN
    IF acl IS NOT NULL THEN
        RAISE WARNING 'lightretriever: lr_search had privileges of its own (%); the updated lr_search has the default ones (EXECUTE for PUBLIC)', acl
            USING HINT = 'Grant or revoke them again on lightretriever.lr_search.';
    END IF;
END $$;
DROP FUNCTION lr_search(pg_catalog.regclass, text, integer, text, real, integer, text, text, text, text, text, text, integer, text, text, integer, real);
CREATE  FUNCTION "lr_search"(
	"source" regclass, /* Option < PgRelation > */
	"query" TEXT, /* Option < & str > */
	"k" INT DEFAULT 10, /* Option < i32 > */
	"mode" TEXT DEFAULT 'hybrid', /* Option < & str > */
	"dense_weight" real DEFAULT 0.7, /* Option < f32 > */
	"candidates" INT DEFAULT 1000, /* Option < i32 > */
	"dense_column" TEXT DEFAULT NULL, /* Option < & str > */
	"sparse_column" TEXT DEFAULT NULL, /* Option < & str > */
	"id_column" TEXT DEFAULT NULL, /* Option < & str > */
	"model" TEXT DEFAULT NULL, /* Option < & str > */
	"sparse_model" TEXT DEFAULT NULL, /* Option < & str > */
	"instruction" TEXT DEFAULT NULL, /* Option < & str > */
	"rerank" INT DEFAULT 0, /* Option < i32 > */
	"rerank_model" TEXT DEFAULT NULL, /* Option < & str > */
	"fusion" TEXT DEFAULT 'zscore', /* Option < & str > */
	"feedback" INT DEFAULT 0, /* Option < i32 > */
	"feedback_weight" real DEFAULT 0.5, /* Option < f32 > */
	"smoothing" INT DEFAULT 50, /* Option < i32 > */
	"smoothing_neighbours" INT DEFAULT 10, /* Option < i32 > */
	"smoothing_weight" real DEFAULT 0.5 /* Option < f32 > */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"score" real,  /* f32 */
	"dense_score" real,  /* Option < f32 > */
	"sparse_score" real,  /* Option < f32 > */
	"rerank_score" real  /* Option < f32 > */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_search_wrapper';
