-- lightretriever 0.2.0 → 0.3.0 (ALTER EXTENSION lightretriever UPDATE): the rerank path.
-- Catalog tables, queues and files are unchanged (a reranker is an lr_models row of family
-- 'reranker'); tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.3.0 install
-- object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.3.0'" to load this file. \quit

-- PE-Rank listwise reranking.
CREATE  FUNCTION "lr_rerank_embeddings"(
	"query" TEXT, /* Option < & '_ str > */
	"embeddings" vector[], /* :: std :: option :: Option < Array < '_, Vector > > */
	"model" TEXT DEFAULT NULL, /* Option < & '_ str > */
	"window_size" INT DEFAULT 20, /* Option < i32 > */
	"step" INT DEFAULT 10, /* Option < i32 > */
	"mode" TEXT DEFAULT 'embedding' /* Option < & '_ str > */
) RETURNS TABLE (
	"rank" INT,  /* i32 */
	"idx" INT,  /* i32 */
	"score" real  /* f32 */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_rerank_embeddings_wrapper';

CREATE  FUNCTION "lr_rerank"(
	"query" TEXT, /* Option < & '_ str > */
	"ids" bigint[], /* :: std :: option :: Option < Array < '_, i64 > > */
	"source" regclass DEFAULT NULL, /* Option < PgRelation > */
	"model" TEXT DEFAULT NULL, /* Option < & '_ str > */
	"window_size" INT DEFAULT 20, /* Option < i32 > */
	"step" INT DEFAULT 10, /* Option < i32 > */
	"embedding_column" TEXT DEFAULT NULL, /* Option < & '_ str > */
	"text_column" TEXT DEFAULT NULL, /* Option < & '_ str > */
	"id_column" TEXT DEFAULT NULL, /* Option < & '_ str > */
	"mode" TEXT DEFAULT 'embedding' /* Option < & '_ str > */
) RETURNS TABLE (
	"rank" INT,  /* i32 */
	"id" bigint,  /* i64 */
	"score" real  /* f32 */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_rerank_wrapper';

-- lr_search gains rerank => n (the top n hits reranked) and a rerank_score column: a new
-- signature and result, so the old function is replaced.
DROP FUNCTION "lr_search"(regclass, text, integer, text, real, integer, text, text, text, text, text, text);
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
	"rerank_model" TEXT DEFAULT NULL /* Option < & str > */
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
