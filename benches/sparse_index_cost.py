#!/usr/bin/env python3
"""The sparse side of `lr_search` with and without pgvector's sparse HNSW index, side by side
(`make bench-sparse-index`; stdlib, psql and pgbench).

Without an index on the sparsevec column, every `lr_search` in hybrid or sparse mode computes
the query's inner product with every row's sparse vector. pgvector indexes `sparsevec` columns
with HNSW (`sparsevec_ip_ops`) when each vector has at most 1,000 non-zeros; SPLADE-tiny's
document vectors of CISI's abstracts have 33–560. An HNSW scan is approximate, so this bench
measures what the index costs in answers beside what it saves in time.

On a throwaway cluster with the installed extension, `make bench-search`'s set-up (its
`setup()`: CISI and LR_BENCH_SEARCH_ROWS synthetic rows, default 100,000, auto-encoded with
MiniLM and SPLADE-tiny; about 15 minutes here). For each table, CISI's 112 queries:
  * two fresh copies of the table (vectors in the row, primary key, HNSW on the dense column),
    one with an HNSW index on its sparse column as well (build time, index size);
  * exact: each query's sparse candidates (`lr_search(t, q, 1000, mode => 'sparse', smoothing
    => 0)`) and its hybrid top 10 (`lr_search(t, q, 10)`) on the copy without it; the same
    calls on the copy with it: recall of the exact top 10 / 100 / 1,000 sparse candidates, the
    hybrid top 10's overlap, and on CISI nDCG@10 of the hybrid against the judgements;
  * pgbench, 1 client, interleaved rounds: the default `lr_search(t, q, 10)` on both tables.
Writes docs/bench/sparse-index.json. LR_BENCH_SPARSE_SECONDS (default 10 per run),
LR_BENCH_SPARSE_ROUNDS (default 3), LR_BENCH_SPARSE_TABLES (default "cisi synthetic"),
LR_BENCH_SPARSE_KEEP=1 (leave the cluster up).
"""
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("LR_PGPORT", "28881"))
CLUSTER = Path(os.environ.get("LR_CLUSTER_DIR", f"/tmp/lightretriever-bench-sparse-{PORT}"))
SOCK = CLUSTER / "sock"
CISI = ROOT.parent / "shared" / "data" / "cisi"
SECONDS = int(os.environ.get("LR_BENCH_SPARSE_SECONDS", "10"))
ROUNDS = int(os.environ.get("LR_BENCH_SPARSE_ROUNDS", "3"))
TABLES = os.environ.get("LR_BENCH_SPARSE_TABLES", "cisi synthetic").split()
ENV = dict(os.environ, LR_PGPORT=str(PORT), LR_CLUSTER_DIR=str(CLUSTER))
DB = "postgres"
# bench-search's set-up, on this bench's cluster (it reads the port and directory at import).
os.environ.update(LR_PGPORT=str(PORT), LR_CLUSTER_DIR=str(CLUSTER))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_side_by_side  # noqa: E402


psql, log = search_side_by_side.psql, search_side_by_side.log


def ids(table, qid, k, options):
    """The ids `lr_search` returns for query `qid`, in order."""
    out = psql(f"SELECT string_agg(id::text, ',' ORDER BY n) FROM lightretriever.lr_search('{table}', "
               f"(SELECT text FROM bench_queries WHERE qid = {qid}), {k}{options}) WITH ORDINALITY AS s(id, score, d, sp, r, n)")
    return [int(x) for x in out.split(",")] if out else []


def answers(table, nqueries):
    return {
        "sparse": [ids(table, q, 1000, ", mode => 'sparse', smoothing => 0") for q in range(1, nqueries + 1)],
        "hybrid": [ids(table, q, 10, "") for q in range(1, nqueries + 1)],
    }


def recall(exact, approximate, k):
    """Mean over queries of |exact top k ∩ approximate top k| / |exact top k|."""
    values = [len(set(e[:k]) & set(a[:k])) / len(e[:k]) for e, a in zip(exact, approximate) if e[:k]]
    return statistics.mean(values) if values else float("nan")


def ndcg10(rankings):
    """nDCG@10 of the hybrid rankings against CISI's judgements (bench_queries numbers the
    queries in queries.jsonl's order)."""
    queries = [json.loads(l)["_id"] for l in open(CISI / "queries.jsonl")]
    qrels = {}
    for line in open(CISI / "qrels" / "test.tsv").read().splitlines()[1:]:
        q, d, rel = line.split("\t")
        if int(rel) > 0:
            qrels.setdefault(q, {})[int(d)] = int(rel)
    scores = []
    for qid, ranking in zip(queries, rankings):
        rel = qrels.get(qid)
        if not rel:
            continue
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
        ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(rel.values(), reverse=True)[:10]))
        scores.append(dcg / ideal)
    return statistics.mean(scores), len(scores)


def pgbench(table, nqueries):
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "q.sql"
        script.write_text(f"\\set q random(1, {nqueries})\n"
                          f"SELECT count(*) FROM lightretriever.lr_search('{table}', (SELECT text FROM bench_queries WHERE qid = :q), 10);\n")
        out = subprocess.run(["pgbench", "-n", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-M", "prepared", "-c", "1",
                              "-T", str(SECONDS), "-f", str(script), DB], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"pgbench failed ({table}):\n{out.stdout}\n{out.stderr}")
        return float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))


def main():
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "start"], env=ENV, check=True)
    try:
        run()
    finally:
        if os.environ.get("LR_BENCH_SPARSE_KEEP") != "1":
            subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "stop"], env=ENV)


def run():
    docs, queries = search_side_by_side.load_cisi()
    results = {"seconds_per_run": SECONDS, "rounds": ROUNDS, "tables": {}, "setup": search_side_by_side.setup(docs, queries)}
    nqueries = int(psql("SELECT count(*) FROM bench_queries"))
    for table in TABLES:
        indexed = f"{table}_sparse_hnsw"
        nnz = psql(f"SELECT max(n), round(avg(n)) FROM (SELECT array_length(string_to_array(split_part(body_sparse::text, '}}', 1), ','), 1) n FROM {table}) s")
        log(f"{table}: non-zeros per row, max and mean: {nnz}")
        # Two fresh copies, alike but for the sparse index (the auto-encoded table itself has
        # the dead rows of its encoding's updates).
        scanned = f"{table}_sparse_scan"
        t = time.time()
        for copy in (scanned, indexed):
            psql(f"DROP TABLE IF EXISTS {copy}; CREATE TABLE {copy} (LIKE {table}); "
                 f"ALTER TABLE {copy} ALTER COLUMN body_embedding SET STORAGE MAIN, ALTER COLUMN body_sparse SET STORAGE MAIN; "
                 f"INSERT INTO {copy} SELECT * FROM {table}; ALTER TABLE {copy} ADD PRIMARY KEY (id); "
                 f"SET maintenance_work_mem = '1GB'; CREATE INDEX ON {copy} USING hnsw (body_embedding vector_ip_ops); ANALYZE {copy}")
        copy_s = time.time() - t
        t = time.time()
        psql(f"SET maintenance_work_mem = '1GB'; CREATE INDEX {indexed}_sp ON {indexed} USING hnsw (body_sparse sparsevec_ip_ops)")
        build_s = time.time() - t
        size = int(psql(f"SELECT pg_relation_size('{indexed}_sp')"))
        log(f"{table}: two copies with their dense index {copy_s:.0f} s; sparse HNSW built in {build_s:.0f} s, {size / 1e6:.1f} MB")
        exact = answers(scanned, nqueries)
        approximate = answers(indexed, nqueries)
        row = {"non_zeros_max_mean": nnz, "index_build_s": build_s, "index_bytes": size,
               "sparse_recall": {str(k): recall(exact["sparse"], approximate["sparse"], k) for k in (10, 100, 1000)},
               "hybrid_top10_overlap": recall(exact["hybrid"], approximate["hybrid"], 10)}
        if table == "cisi":
            row["ndcg10"] = {"scan": ndcg10(exact["hybrid"]), "sparse_hnsw": ndcg10(approximate["hybrid"])}
        log(f"{table}: sparse candidates' recall@10/100/1000 "
            + " / ".join(f"{v:.3f}" for v in row["sparse_recall"].values())
            + f"; hybrid top 10 overlap {row['hybrid_top10_overlap']:.3f}"
            + (f"; nDCG@10 scan {row['ndcg10']['scan'][0]:.4f}, sparse HNSW {row['ndcg10']['sparse_hnsw'][0]:.4f} "
               f"({row['ndcg10']['scan'][1]} judged queries)" if "ndcg10" in row else ""))
        qps = {"scan": [], "sparse_hnsw": []}
        for r in range(ROUNDS):
            order = [("scan", scanned), ("sparse_hnsw", indexed)]
            for case, t_name in (order if r % 2 == 0 else order[::-1]):
                qps[case].append(pgbench(t_name, nqueries))
        row["qps_rounds"] = qps
        row["qps"] = {case: statistics.median(v) for case, v in qps.items()}
        row["speedup"] = row["qps"]["sparse_hnsw"] / row["qps"]["scan"]
        log(f"{table}: lr_search default, 1 client: scan {row['qps']['scan']:.1f} q/s, sparse HNSW {row['qps']['sparse_hnsw']:.1f} q/s "
            f"({row['speedup']:.2f}x; rounds {qps})")
        results["tables"][table] = row
        psql(f"DROP TABLE {scanned}, {indexed}")
    out = ROOT / "docs" / "bench" / "sparse-index.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
