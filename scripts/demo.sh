#!/usr/bin/env bash
# The demo: a throwaway cluster, the extension, the embedded default model, a real collection
# (../shared/data/cisi, else a bundled sample), documents encoded by the full model, queries
# encoded by table lookup, HNSW search. Expects `make install` to have run (make demo does).
set -euo pipefail
cd "$(dirname "$0")/.."
export LR_PGPORT=${LR_PGPORT:-28816}
export LR_CLUSTER_DIR=${LR_CLUSTER_DIR:-/tmp/lightretriever-demo-$LR_PGPORT}
MODEL_DIR=${LR_MODEL_ROOT:-/opt/lightretriever/models}/all-minilm-l6-v2
SPARSE_DIR=${LR_MODEL_ROOT:-/opt/lightretriever/models}/splade-tiny
CORPUS=${LR_DEMO_CORPUS:-../shared/data/cisi/corpus.jsonl}
[ -f "$CORPUS" ] || CORPUS=scripts/sample/corpus.jsonl
psql_() { scripts/cluster.sh psql -v ON_ERROR_STOP=1 -q "$@"; }

trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
echo "== corpus: $CORPUS ($(wc -l < "$CORPUS") documents)"
psql_ <<SQL
CREATE EXTENSION lightretriever CASCADE;
SET search_path = public, lightretriever;
SELECT lr_register_model('all-minilm-l6-v2', '$MODEL_DIR') IS NOT NULL AS registered;
SELECT lr_register_model('splade-tiny', '$SPARSE_DIR') IS NOT NULL AS registered;
ALTER DATABASE postgres SET lightretriever.default_model = 'all-minilm-l6-v2';
ALTER DATABASE postgres SET lightretriever.default_sparse_model = 'splade-tiny';
CREATE TABLE raw (line text);
SQL
# Each line read verbatim (no COPY escapes): CSV with quote/delimiter bytes that never occur.
psql_ -c "\\copy raw FROM '$CORPUS' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
psql_ <<'SQL'
SET search_path = public, lightretriever;
CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text,
                   full_text text GENERATED ALWAYS AS (coalesce(title, '') || ' ' || coalesce(body, '')) STORED,
                   embedding vector(384), sparse sparsevec(30522));
INSERT INTO docs (id, title, body)
SELECT (j->>'_id')::bigint, j->>'title', j->>'text' FROM (SELECT line::jsonb AS j FROM raw) s;
\echo == encoding documents with the full model (batched) ...
\timing on
WITH src AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(full_text ORDER BY id) AS texts FROM docs),
     enc AS (SELECT src.ids[e.n] AS id, e.v FROM src, lr_encode_documents(src.texts) WITH ORDINALITY AS e(v, n))
UPDATE docs SET embedding = enc.v FROM enc WHERE docs.id = enc.id;
\echo == building the LightRetriever query table (every vocabulary token encoded once) ...
SELECT lr_build_query_table() AS table_rows;
\echo == sparse side: SPLADE-tiny document weights (batched) ...
WITH src AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(full_text ORDER BY id) AS texts FROM docs),
     enc AS (SELECT src.ids[e.n] AS id, e.v FROM src, lr_encode_documents_sparse(src.texts) WITH ORDINALITY AS e(v, n))
UPDATE docs SET sparse = enc.v FROM enc WHERE docs.id = enc.id;
\echo == fitting the query table to the document encoder on this corpus (no labels) ...
SELECT jsonb_pretty(jsonb_build_object(
         'version', r->'version', 'pairs_train', r->'pairs_train', 'seconds', r->'seconds_total',
         'held_out_source_mrr', jsonb_build_object('full', r->'source_mrr_full', 'untrained', r->'source_mrr_before', 'fitted', r->'source_mrr_after')))
  FROM lr_fit_query_table('all-minilm-l6-v2', 'docs', 'full_text', vector_column => 'embedding') AS r;
\echo == sparse query weights: the idf of each token over this corpus (no labels) ...
SELECT r->'version' AS version, r->'ids_in_corpus' AS ids_in_corpus, r->'seconds' AS seconds
  FROM lr_fit_sparse_query_weights('splade-tiny', 'docs', 'full_text') AS r;
CREATE INDEX ON docs USING hnsw (embedding vector_ip_ops);
\timing off
SQL
for q in "the history of the Dewey decimal classification" \
         "automatic indexing and retrieval of documents" \
         "how do scientists use libraries and information"; do
  echo
  echo "== query (fitted table lookup + idf-weighted token counts, no model; hybrid 0.7/0.3): $q"
  psql_ -v q="$q" <<'SQL'
SET search_path = public, lightretriever;
SELECT s.id, round(s.score::numeric, 3) AS score, round(s.dense_score::numeric, 3) AS dense,
       round(s.sparse_score::numeric, 2) AS sparse, left(d.title, 60) AS title
  FROM lr_search('docs', :'q', 5) s JOIN docs d USING (id) ORDER BY s.score DESC;
SQL
done
echo
echo "== query encoding, 200 calls each: lookup (in this backend, no model) vs full model (through the encoder worker)"
psql_ <<'SQL'
SET search_path = public, lightretriever;
DO $$
DECLARE t0 timestamptz; t1 timestamptz; t2 timestamptz; v vector;
BEGIN
  PERFORM lr_encode_query('warm up'); PERFORM lr_encode_document('warm up');
  t0 := clock_timestamp();
  FOR i IN 1..200 LOOP v := lr_encode_query('information retrieval evaluation ' || i); END LOOP;
  t1 := clock_timestamp();
  FOR i IN 1..200 LOOP v := lr_encode_document('information retrieval evaluation ' || i); END LOOP;
  t2 := clock_timestamp();
  RAISE NOTICE 'lookup: % us/query   full model: % us/query   (%x)',
    round(extract(epoch FROM t1 - t0) * 1e6 / 200), round(extract(epoch FROM t2 - t1) * 1e6 / 200),
    round(extract(epoch FROM t2 - t1) / extract(epoch FROM t1 - t0));
END $$;
SQL
