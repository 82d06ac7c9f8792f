-- lightretriever 0.6.0 → 0.7.0 (ALTER EXTENSION lightretriever UPDATE): lr_search's hybrid
-- fusion becomes a choice (fusion => 'zscore', the new default, chosen label-free in
-- docs/quality.md; 'minmax', LightRetriever's published fusion and the default before; 'rrf',
-- reciprocal-rank fusion with k = 60) and gains pseudo-relevance feedback on the dense query
-- (feedback => n rows, feedback_weight => w: one Rocchio step toward the mean stored vector of
-- the top n hits, then the dense side is searched again; 0 rows, the default, is none). New
-- parameters change the signature, so the function is replaced: a REVOKE or GRANT on lr_search
-- must be applied again, and a user's view or SQL function that depends on it must be dropped
-- before the update (it fails otherwise) and created again after. The default score is a
-- z-score, no longer in [0, 1]; fusion => 'minmax' gives the published scores. Catalog tables, queues, vectors and triggers are unchanged.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.7.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.7.0'" to load this file. \quit

DROP FUNCTION "lr_search"(regclass, text, integer, text, real, integer, text, text, text, text, text, text, integer, text);
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
	"feedback_weight" real DEFAULT 0.5 /* Option < f32 > */
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
