-- Catalog tables of the lightretriever extension (schema `lightretriever`).
-- Only superusers write them (through lr_register_model / lr_build_query_table); everyone may read.

CREATE TABLE lr_models (
    name          text PRIMARY KEY
                  CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    path          text NOT NULL,
    family        text NOT NULL,
    architecture  text NOT NULL,
    hidden_size   integer NOT NULL,
    vocab_size    integer NOT NULL,
    max_length    integer NOT NULL,
    pooling       text NOT NULL,
    has_lm_head   boolean NOT NULL,
    options       jsonb NOT NULL DEFAULT '{}',
    info          jsonb NOT NULL,           -- everything the encoders need, as inspected
    registered_at timestamptz NOT NULL DEFAULT now(),
    registered_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE lr_models IS 'Models registered with lightretriever.lr_register_model';

-- One row per built table version; the newest version of (model, instruction) is the one used.
-- Its bytes are rows of lr_query_table_chunks; `file` is where the server that built it wrote
-- its cache (every server derives its own: $PGDATA/lightretriever/tables/db<oid>-...).
CREATE TABLE lr_query_tables (
    model        text NOT NULL REFERENCES lr_models(name) ON DELETE CASCADE,
    instruction  text NOT NULL DEFAULT '',  -- '' = no instruction
    version      integer NOT NULL CHECK (version > 0),
    file         text NOT NULL UNIQUE,      -- relative to the data directory
    rows         bigint NOT NULL,
    dims         integer NOT NULL,
    dtype        text NOT NULL,
    checksum     text NOT NULL,
    method       text NOT NULL,             -- how the rows were made ('token_forward', ...)
    build        jsonb NOT NULL DEFAULT '{}',
    built_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, instruction, version)
);
COMMENT ON TABLE lr_query_tables IS 'LightRetriever query tables built by lightretriever.lr_build_query_table';

-- Per-id query weights of a sparse model (lr_fit_sparse_query_weights): lr_encode_query_sparse
-- multiplies each raw token count by its id's weight. One row per model, replaced by a refit;
-- version counts the fits. Without a row, queries are raw counts (LightRetriever's).
CREATE TABLE lr_sparse_query_weights (
    model                 text PRIMARY KEY REFERENCES lr_models(name) ON DELETE CASCADE,
    version               integer NOT NULL CHECK (version > 0),
    method                text NOT NULL,       -- 'idf'
    weights               real[] NOT NULL,     -- one per vocabulary id
    tokenizer_fingerprint text NOT NULL,       -- the tokenizer the ids came from
    build                 jsonb NOT NULL DEFAULT '{}',
    built_at              timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE lr_sparse_query_weights IS 'Sparse query weights fitted by lightretriever.lr_fit_sparse_query_weights';

-- The bytes of every query-table version in chunks of 1 MiB (lr_table::cache::CHUNK_BYTES), in
-- order: WAL-logged and dumped, so that a streaming replica, a restored dump and every Citus
-- node have the table. A server's file under its data directory is its cache of them, written on
-- first use (and again if it is damaged or removed).
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
-- Floats do not compress: stored out of line as they are, without pglz's attempt.
ALTER TABLE lr_query_table_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE lr_query_table_chunks IS 'The bytes of the query tables in lightretriever.lr_query_tables';

-- Registered models, tables and weights survive pg_dump/restore (in this order: the foreign keys').
SELECT pg_catalog.pg_extension_config_dump('lr_models', '');
SELECT pg_catalog.pg_extension_config_dump('lr_query_tables', '');
SELECT pg_catalog.pg_extension_config_dump('lr_query_table_chunks', '');
SELECT pg_catalog.pg_extension_config_dump('lr_sparse_query_weights', '');

GRANT USAGE ON SCHEMA lightretriever TO PUBLIC;
-- The chunks tell nothing that lr_encode_query does not (any role may read them: a lookup on a
-- server without the file writes it from them, as the calling role).
GRANT SELECT ON lr_models, lr_query_tables, lr_query_table_chunks, lr_sparse_query_weights TO PUBLIC;
