-- lr_search on a small hand-made table: dense (query-table lookup), sparse (token counts) and
-- hybrid rankings and their scores: z-score fusion (the default), LightRetriever's published
-- min-max fusion, reciprocal-rank fusion, pseudo-relevance feedback, and score smoothing over
-- the top rows' graph (on by default; smoothing => 0 is 0.8.0's ranking).
CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
\getenv model_root LR_MODEL_ROOT
SELECT lightretriever.lr_register_model('minilm', :'model_root' || '/all-minilm-l6-v2') ->> 'family' AS family;
SELECT lightretriever.lr_register_model('splade', :'model_root' || '/splade-tiny') ->> 'family' AS family;
SELECT lightretriever.lr_build_query_table('minilm') AS rows;
SET lightretriever.default_model = 'minilm';
SET lightretriever.default_sparse_model = 'splade';
CREATE TABLE facts (id bigint PRIMARY KEY, body text, emb vector(384), sp sparsevec(30522));
INSERT INTO facts (id, body) VALUES
  (1, 'The Nile is the longest river in Africa and flows north into the Mediterranean Sea.'),
  (2, 'Public libraries lend books, music and films to anyone with a library card.'),
  (3, 'A diesel engine ignites its fuel by the heat of compressed air, without a spark plug.'),
  (4, 'Bach wrote the Brandenburg Concertos, six pieces of baroque orchestral music.'),
  (5, 'The Amazon river carries more water to the sea than any other river on Earth.'),
  (6, 'Electric cars have no engine in the old sense: a battery drives electric motors.'),
  (7, 'Reading rooms of old libraries were lit by tall windows to spare candles.'),
  (8, NULL);
UPDATE facts SET emb = lightretriever.lr_encode_document(body), sp = lightretriever.lr_encode_document_sparse(body);
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'which river is the longest', k => 3, mode => 'dense');
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'engines and motors', k => 3, mode => 'sparse');
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'books in a library', k => 4, mode => 'hybrid', fusion => 'minmax', smoothing => 0);
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'books in a library', k => 4);
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'books in a library', k => 4, fusion => 'rrf', dense_weight => 0.5);
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'books in a library', k => 4, smoothing => 0);
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'books in a library', k => 4, smoothing => 7, smoothing_neighbours => 1, smoothing_weight => 1);
SELECT id, round(score::numeric, 4) AS score, round(dense_score::numeric, 4) AS dense, round(sparse_score::numeric, 4) AS sparse
  FROM lightretriever.lr_search('facts', 'books in a library', k => 4, feedback => 2, feedback_weight => 1);
SELECT lightretriever.lr_search('facts', 'anything', fusion => 'borda');
SELECT lightretriever.lr_search('facts', 'anything', feedback => -1);
SELECT lightretriever.lr_search('facts', 'anything', mode => 'sparse', feedback => 2);
SELECT lightretriever.lr_search('facts', 'anything', feedback_weight => 'NaN');
SELECT lightretriever.lr_search('facts', 'anything', smoothing => -1);
SELECT lightretriever.lr_search('facts', 'anything', smoothing => 201);
SELECT lightretriever.lr_search('facts', 'anything', smoothing_neighbours => 0);
SELECT lightretriever.lr_search('facts', 'anything', smoothing_weight => 'Infinity');
SELECT lightretriever.lr_search('facts', 'anything', mode => 'fuzzy');
SELECT lightretriever.lr_search('facts', 'anything', k => 0);
DROP TABLE facts;
SELECT lightretriever.lr_drop_model(name) FROM lightretriever.lr_models ORDER BY name;
