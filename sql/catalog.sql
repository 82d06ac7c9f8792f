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

-- One row per built table version. The file lives under the data directory
-- ($PGDATA/lightretriever/tables); the newest version of (model, instruction) is the one used.
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

-- Registered models survive pg_dump/restore; table files are server-local and rebuilt.
SELECT pg_catalog.pg_extension_config_dump('lr_models', '');

GRANT USAGE ON SCHEMA lightretriever TO PUBLIC;
GRANT SELECT ON lr_models, lr_query_tables, lr_sparse_query_weights TO PUBLIC;
