-- First start of the image (docker/entrypoint.sh, psql variables :db and :models): the
-- extension, the two embedded default models, the dense model's query table, and the database
-- defaults that make `lr_search(table, query)` and `lr_encode_query(query)` work unqualified.
CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
SELECT lightretriever.lr_register_model('all-minilm-l6-v2', :'models' || '/all-minilm-l6-v2') IS NOT NULL AS registered;
SELECT lightretriever.lr_register_model('splade-tiny', :'models' || '/splade-tiny') IS NOT NULL AS registered;
-- Every vocabulary token through the full model once (30,522 rows, ~10 s on 2 cores).
SELECT lightretriever.lr_build_query_table('all-minilm-l6-v2') AS query_table_rows;
ALTER DATABASE :"db" SET lightretriever.default_model = 'all-minilm-l6-v2';
ALTER DATABASE :"db" SET lightretriever.default_sparse_model = 'splade-tiny';
ALTER DATABASE :"db" SET search_path = "$user", public, lightretriever;
