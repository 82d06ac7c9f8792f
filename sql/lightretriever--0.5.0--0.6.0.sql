-- lightretriever 0.5.0 → 0.6.0 (ALTER EXTENSION lightretriever UPDATE): query tables travel with
-- the database. Every table version's bytes become rows of lr_query_table_chunks (WAL-logged and
-- dumped), and a server's file is its cache of them, so streaming replicas, restored dumps and
-- Citus nodes serve lookups without a rebuild. The update stores the tables built before it from
-- this server's files (lr_store_query_tables; a version whose file is missing or damaged stays
-- unstored, with a WARNING) and names each file by its checksum. lr_query_tables and
-- lr_sparse_query_weights are now dumped by pg_dump, as lr_models was. lr_sync_nodes copies the
-- catalog to Citus worker nodes. Otherwise catalog tables,
-- queues, vectors and triggers are unchanged.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.6.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.6.0'" to load this file. \quit

CREATE TABLE lr_query_table_chunks (
    model        text NOT NULL,
    instruction  text NOT NULL,
    version      integer NOT NULL,
    chunk        integer NOT NULL CHECK (chunk >= 0),
    data         bytea NOT NULL,
    PRIMARY KEY (model, instruction, version, chunk),
    -- The model, not the version: lr_sync_nodes copies a version's chunks to a Citus node
    -- before its lr_query_tables row, so that the node never sees a version without its bytes.
    FOREIGN KEY (model) REFERENCES lr_models(name) ON DELETE CASCADE
);
ALTER TABLE lr_query_table_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE lr_query_table_chunks IS 'The bytes of the query tables in lightretriever.lr_query_tables';
SELECT pg_catalog.pg_extension_config_dump('lr_query_tables', '');
SELECT pg_catalog.pg_extension_config_dump('lr_query_table_chunks', '');
SELECT pg_catalog.pg_extension_config_dump('lr_sparse_query_weights', '');
GRANT SELECT ON lr_query_table_chunks TO PUBLIC;

-- Stores the bytes of the table versions that have none yet from this server's files.
CREATE  FUNCTION "lr_store_query_tables"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_store_query_tables_wrapper';

SELECT lightretriever.lr_store_query_tables();

-- Citus: copies the coordinator's models, tables and weights into every worker node's catalog.
CREATE  FUNCTION "lr_sync_nodes"() RETURNS TABLE (
	"node" TEXT,  /* String */
	"port" INT,  /* i32 */
	"versions_removed" bigint,  /* i64 */
	"versions_added" bigint,  /* i64 */
	"chunks_sent" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_sync_nodes_wrapper';
