#!/usr/bin/env python3
"""What pgvector's iterative scans cost the candidate scan `lr_search` runs, side by side on one
cluster (docs/quality.md, "Query-time cost"): CISI's set-up of fusion_cost.py, then pgbench, 1
client, 3 interleaved rounds of 10 s: an HNSW scan of 1,000 rows ordered by a lookup query with
`hnsw.iterative_scan` off and in relaxed order (ef_search 1000 both), and lr_search's default.
Needs the extension installed (`make install`)."""
import os
import subprocess
import sys

os.environ.setdefault("LR_PGPORT", "28891")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fusion_cost as fc  # noqa: E402

SETTINGS = {
    "iterative off": "SET hnsw.ef_search = 1000; SET hnsw.iterative_scan = off;",
    "relaxed_order": "SET hnsw.ef_search = 1000; SET hnsw.iterative_scan = relaxed_order;",
}


def scan_tps(settings, nqueries):
    return fc.pgbench_script(f"{settings}\nSELECT count(*) FROM (SELECT id FROM docs ORDER BY emb <#> (SELECT lightretriever.lr_encode_query(text)"
                             " FROM bench_queries WHERE qid = :q) LIMIT 1000) t;", nqueries, protocol="simple")


def main():
    subprocess.run(["bash", str(fc.ROOT / "scripts/cluster.sh"), "start"], env=fc.ENV, check=True)
    try:
        nqueries = fc.setup()
        for r in range(fc.ROUNDS):
            cells = [f"HNSW scan, {name} {1000 / scan_tps(s, nqueries):.2f} ms" for name, s in SETTINGS.items()]
            cells.append(f"lr_search default {fc.pgbench('docs', '', nqueries):.1f} q/s")
            print(f"round {r + 1}: " + ", ".join(cells), flush=True)
    finally:
        subprocess.run(["bash", str(fc.ROOT / "scripts/cluster.sh"), "stop"], env=fc.ENV)


if __name__ == "__main__":
    main()
