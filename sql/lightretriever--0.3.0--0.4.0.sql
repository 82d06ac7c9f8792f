-- lightretriever 0.3.0 → 0.4.0 (ALTER EXTENSION lightretriever UPDATE): batched sparse encoding.
-- Catalog tables, queues and files are unchanged; tests/e2e/tests/upgrade.rs checks that the
-- result equals a fresh 0.4.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.4.0'" to load this file. \quit

-- Sparse documents in batches, as lr_encode_documents encodes dense ones.
CREATE  FUNCTION "lr_encode_documents_sparse"(
	"docs" TEXT[], /* :: std :: option :: Option < Array < '_, & '_ str > > */
	"model" TEXT DEFAULT NULL /* Option < & '_ str > */
) RETURNS SETOF sparsevec /* Option < SparseVec > */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_encode_documents_sparse_wrapper';
