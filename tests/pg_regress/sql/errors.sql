-- The documented error cases: message, hint and SQLSTATE of each.
DROP ROLE IF EXISTS lr_regress_user;
CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
\getenv model_root LR_MODEL_ROOT
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT lightretriever.lr_register_model('minilm', :'model_root' || '/all-minilm-l6-v2') ->> 'family' AS family;
SELECT lightretriever.lr_register_model('splade', :'model_root' || '/splade-tiny') ->> 'family' AS family;

-- Arguments
SELECT lightretriever.lr_register_model(NULL, '/nowhere');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_register_model('no spaces please', '/nowhere');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_register_model('nothing_there', '/nowhere/at/all');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_encode_query('a query', 'not_registered');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_encode_query('a query', 'minilm');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_build_query_table('minilm', 'Given a query');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_encode_query_sparse('a query', 'minilm');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_encode_query_sparse('a query', 'splade', 'idf');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_encode_query_sparse('a query', 'splade', 'fitted');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_encode_query_sparse('   ', 'splade');
\echo :LAST_ERROR_SQLSTATE
SET lightretriever.device = 'gpu';
\echo :LAST_ERROR_SQLSTATE

-- Privileges: model registration and fits are for superusers.
CREATE ROLE lr_regress_user;
SET ROLE lr_regress_user;
SELECT lightretriever.lr_register_model('mine', '/nowhere');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_drop_model('minilm');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Auto-encoding refusals
CREATE TABLE no_key (body text);
SELECT lightretriever.lr_enable_auto_encoding('no_key', 'body', 'minilm');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE numbers (id int PRIMARY KEY, n int);
SELECT lightretriever.lr_enable_auto_encoding('numbers', 'n', 'minilm');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE generated (id int PRIMARY KEY, a text, body text GENERATED ALWAYS AS (a || '!') STORED);
SELECT lightretriever.lr_enable_auto_encoding('generated', 'body', 'minilm');
\echo :LAST_ERROR_SQLSTATE
CREATE TEMP TABLE scratch (id int PRIMARY KEY, body text);
SELECT lightretriever.lr_enable_auto_encoding('scratch', 'body', 'minilm');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_enable_auto_encoding('lightretriever.lr_models', 'name', 'minilm');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_wait_for_encoding('numbers');
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_pause_auto_encoding('numbers');
\echo :LAST_ERROR_SQLSTATE

CREATE TABLE docs (id int PRIMARY KEY, body text);
SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm', 'minilm');
\echo :LAST_ERROR_SQLSTATE
SET client_min_messages = error;  -- its NOTICE (rows queued) and WARNING (no worker drains this database)
SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm');
RESET client_min_messages;
ALTER TABLE docs ALTER COLUMN id TYPE text;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE docs DROP COLUMN body;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE docs DROP CONSTRAINT docs_pkey;
\echo :LAST_ERROR_SQLSTATE
SELECT lightretriever.lr_drop_model('minilm');
\echo :LAST_ERROR_SQLSTATE
SET ROLE lr_regress_user;
SELECT lightretriever.lr_disable_auto_encoding('docs');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP EXTENSION lightretriever;
\echo :LAST_ERROR_SQLSTATE

-- Reranking (lr_rerank, lr_rerank_embeddings)
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY[]::vector[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector, NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector], window_size => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector], step => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector], window_size => 5, step => 6);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector], mode => 'list');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector], mode => 'text');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank_embeddings('q', ARRAY['[1,2]'::vector], 'splade');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM lightretriever.lr_rerank('q', ARRAY[1, NULL], 'docs', 'splade');
\echo :LAST_ERROR_SQLSTATE

-- Clean up
SELECT lightretriever.lr_disable_auto_encoding('docs', drop_columns => true);
DROP TABLE no_key, numbers, generated, docs;
DROP ROLE lr_regress_user;
SELECT lightretriever.lr_drop_model(name) FROM lightretriever.lr_models ORDER BY name;
