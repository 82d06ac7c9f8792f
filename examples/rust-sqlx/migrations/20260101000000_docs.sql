-- The app's documents. lr_enable_auto_encoding adds body_embedding vector(384) and
-- body_sparse sparsevec(30522), a queue and triggers: lightretriever's encoder worker encodes
-- every inserted row and every changed text from now on. The models were registered by a
-- superuser (lr_register_model; scripts/examples.sh does it).
CREATE TABLE docs (
    id bigint PRIMARY KEY,
    title text NOT NULL,
    body text
);
SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'all-minilm-l6-v2', 'splade-tiny');
CREATE INDEX docs_body_embedding_hnsw ON docs USING hnsw (body_embedding vector_ip_ops);
