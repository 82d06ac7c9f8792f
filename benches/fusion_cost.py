#!/usr/bin/env python3
"""lr_search's query-time cost by fusion setting, side by side (`make bench-fusion`; stdlib, psql
and pgbench). Issue 17's bound: nothing slower than 2x the published setting.

On a throwaway cluster with the installed extension: CISI's 1,460 documents with dense (MiniLM)
and sparse (SPLADE-tiny) vectors, an HNSW index on the dense column, the query table built and
sparse idf weights fitted. pgbench, 1 client, CISI's 112 queries at random, each case
LR_BENCH_FUSION_SECONDS (default 10) per round, rounds interleaved (default 3), median QPS:
  published  lr_search(t, q, 10, fusion => 'minmax', smoothing => 0)   -- min-max, as 0.6.0 ranked
  unsmoothed lr_search(t, q, 10, smoothing => 0)            -- z-score (0.7.0's and 0.8.0's default)
  default    lr_search(t, q, 10)                            -- z-score + smoothing of the top 50 (0.9.0)
  rrf        lr_search(t, q, 10, fusion => 'rrf', smoothing => 0)
  feedback   lr_search(t, q, 10, feedback => 3, smoothing => 0)   -- z-score + Rocchio, a third scan
  inline     lr_search(t_inline, q, 10)  -- the default on a copy whose vector columns are STORAGE MAIN
             (as lr_enable_auto_encoding makes them): the rows, 3.9 kB of vectors and ~0.7 kB of text,
             pass TOAST's 2 kB threshold, and pgvector's own storage puts the vectors out of line
Writes docs/bench/fusion.json."""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("LR_PGPORT", "28890"))
CLUSTER = Path(os.environ.get("LR_CLUSTER_DIR", f"/tmp/lightretriever-bench-fusion-{PORT}"))
SOCK = CLUSTER / "sock"
MODELS = Path(os.environ.get("LR_MODEL_ROOT", "/opt/lightretriever/models"))
CISI = ROOT.parent / "shared" / "data" / "cisi"
SECONDS = int(os.environ.get("LR_BENCH_FUSION_SECONDS", "10"))
ROUNDS = int(os.environ.get("LR_BENCH_FUSION_ROUNDS", "3"))
ENV = dict(os.environ, LR_PGPORT=str(PORT), LR_CLUSTER_DIR=str(CLUSTER))
DB = "postgres"
CASES = {  # case: (table, lr_search options)
    "published": ("docs", "fusion => 'minmax', smoothing => 0"),
    "unsmoothed": ("docs", "smoothing => 0"),
    "default": ("docs", ""),
    "rrf": ("docs", "fusion => 'rrf', smoothing => 0"),
    "feedback": ("docs", "feedback => 3, smoothing => 0"),
    "inline": ("docs_inline", ""),
}


def psql(sql, stdin=None):
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-d", DB]
    out = subprocess.run(args + (["-c", sql] if sql else []), input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {(sql or stdin)[:200]}\n{out.stderr}")
    return out.stdout.strip()


def quote(s):
    return "'" + s.replace("'", "''") + "'"


def setup():
    psql("CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE")
    psql(f"SELECT lightretriever.lr_register_model('minilm', {quote(str(MODELS / 'all-minilm-l6-v2'))})")
    psql(f"SELECT lightretriever.lr_register_model('splade', {quote(str(MODELS / 'splade-tiny'))})")
    psql("ALTER DATABASE postgres SET lightretriever.default_model = 'minilm'")
    psql("ALTER DATABASE postgres SET lightretriever.default_sparse_model = 'splade'")
    psql("CREATE TABLE docs (id bigint PRIMARY KEY, body text, emb vector(384), sp sparsevec(30522))")
    psql("CREATE TABLE bench_queries (qid int PRIMARY KEY, text text)")
    rows = [json.loads(line) for line in open(CISI / "corpus.jsonl")]
    values = ",\n".join(f"({int(d['_id'])}, {quote((d.get('title') or '') + ' ' + d['text'])})" for d in rows)
    psql(None, stdin=f"INSERT INTO docs (id, body) VALUES {values};")
    queries = [json.loads(line) for line in open(CISI / "queries.jsonl")]
    values = ",\n".join(f"({i + 1}, {quote(q['text'])})" for i, q in enumerate(queries))
    psql(None, stdin=f"INSERT INTO bench_queries VALUES {values};")
    psql(None, stdin="""
      WITH src AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(body ORDER BY id) AS texts FROM docs),
           dense AS (SELECT src.ids[e.n] AS id, e.v FROM src, lightretriever.lr_encode_documents(src.texts) WITH ORDINALITY AS e(v, n)),
           sparse AS (SELECT src.ids[e.n] AS id, e.v FROM src, lightretriever.lr_encode_documents_sparse(src.texts) WITH ORDINALITY AS e(v, n))
      UPDATE docs SET emb = dense.v, sp = sparse.v FROM dense JOIN sparse USING (id) WHERE docs.id = dense.id;
      CREATE INDEX ON docs USING hnsw (emb vector_ip_ops);
      CREATE TABLE docs_inline (LIKE docs INCLUDING ALL);
      ALTER TABLE docs_inline ALTER COLUMN emb SET STORAGE MAIN, ALTER COLUMN sp SET STORAGE MAIN;
      INSERT INTO docs_inline SELECT * FROM docs;
      ANALYZE docs_inline;
      SELECT lightretriever.lr_build_query_table('minilm');
      SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'docs', 'body');
      ANALYZE docs;""")
    return len(queries)


def pgbench_script(body, nqueries, protocol="prepared"):
    """Transactions per second of `body` (pgbench script lines; `:q` is a random query id), 1
    client, SECONDS long."""
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "q.sql"
        script.write_text(f"\\set q random(1, {nqueries})\n{body}\n")
        out = subprocess.run(["pgbench", "-n", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-M", protocol, "-c", "1",
                              "-T", str(SECONDS), "-f", str(script), DB], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"pgbench failed ({body[:200]}):\n{out.stdout}\n{out.stderr}")
        return float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))


def pgbench(table, options, nqueries):
    extra = f", {options}" if options else ""
    return pgbench_script(f"SELECT count(*) FROM lightretriever.lr_search('{table}', (SELECT text FROM bench_queries WHERE qid = :q), 10{extra});",
                          nqueries)


def main():
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "start"], env=ENV, check=True)
    try:
        nqueries = setup()
        print(psql("SELECT string_agg(format('%s: heap %s, TOAST %s', relname, pg_size_pretty(pg_relation_size(oid)), "
                   "pg_size_pretty(pg_relation_size(reltoastrelid))), '; ' ORDER BY relname) FROM pg_class WHERE relname IN ('docs', 'docs_inline')"),
              flush=True)
        qps = {case: [] for case in CASES}
        for r in range(ROUNDS):
            for case, (table, options) in CASES.items():
                qps[case].append(pgbench(table, options, nqueries))
            print(f"round {r + 1}: " + ", ".join(f"{c} {v[-1]:.1f} q/s" for c, v in qps.items()), flush=True)
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "stop"], env=ENV)
    median = {c: statistics.median(v) for c, v in qps.items()}
    base = median["published"]
    result = {"collection": "CISI (1,460 documents, HNSW on the dense column)", "clients": 1, "seconds_per_run": SECONDS,
              "rounds": ROUNDS, "qps": qps, "median_qps": median,
              "time_vs_published": {c: base / q for c, q in median.items()}}
    print("| case | median q/s | time per query vs published (bound: 2x) |")
    print("|---|---:|---:|")
    for c, q in median.items():
        print(f"| {c} | {q:.1f} | {base / q:.2f}x |")
    out = ROOT / "docs" / "bench" / "fusion.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
