#!/usr/bin/env python3
"""What sending a long `lr_encode_documents` array to the encoder worker in requests of
`lightretriever.max_batch` texts costs (0.10.0: cancel is checked between them), side by side on
one throwaway cluster: the same 512 CISI documents encoded with max_batch = 32 (chunked, the
default) and max_batch = 1024 (one request, as before 0.10.0; the worker still runs its forward
passes 32 texts at a time, length-sorted either way), in interleaved rounds, a restart between
(max_batch is a postmaster setting) and a warm-up call after each. Needs the extension installed
(`make install-dev` or `make install`). Prints seconds per call and the ratio."""
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT = os.environ.get("LR_PGPORT", "28893")
DIR = os.environ.get("LR_CLUSTER_DIR", f"/tmp/lightretriever-cluster-{PORT}")
ENV = {**os.environ, "LR_PGPORT": PORT, "LR_CLUSTER_DIR": DIR}
CISI = next(p for p in (ROOT / "shared/data/cisi", ROOT.parent / "shared/data/cisi") if p.is_dir())
MODEL = os.environ.get("LR_MODEL", "/opt/lightretriever/models/all-minilm-l6-v2")
DOCS = 512
ROUNDS = int(os.environ.get("LR_ROUNDS", "3"))
SIDES = {"max_batch 32 (chunked)": 32, "max_batch 1024 (one request)": 1024}


def psql(sql, timing=False):
    args = ["bash", str(ROOT / "scripts/cluster.sh"), "psql", "-v", "ON_ERROR_STOP=1", "-qAt"]
    script = ("\\timing on\n" if timing else "") + sql
    out = subprocess.run(args, input=script, env=ENV, check=True, capture_output=True, text=True).stdout
    return out


def restart(max_batch):
    psql(f"ALTER SYSTEM SET lightretriever.max_batch = {max_batch}")
    # With a log file: the restarted server must not hold this process's pipes open.
    subprocess.run(["sudo", "-u", "postgres", "/usr/lib/postgresql/15/bin/pg_ctl", "-D", f"{DIR}/data", "-l", f"{DIR}/server.log",
                    "restart", "-w", "-m", "fast"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert psql("SHOW lightretriever.max_batch").strip() == str(max_batch)
    psql("SELECT vector_dims(lightretriever.lr_encode_document('warm up the worker', 'minilm'))")


def timed_call():
    out = psql("SELECT count(*) FROM lightretriever.lr_encode_documents(ARRAY(SELECT body FROM docs ORDER BY id), 'minilm') v "
               "WHERE v IS NOT NULL", timing=True)
    count = int(out.splitlines()[0])
    assert count == DOCS, out
    return float(re.search(r"Time: ([0-9.]+) ms", out).group(1)) / 1000


def main():
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "start"], env=ENV, check=True)
    try:
        docs = [json.loads(line) for line in (CISI / "corpus.jsonl").open()][:DOCS]
        rows = "\n".join(f"{i}\t{(d.get('title', '') + ' ' + d['text']).strip()}".replace("\\", "\\\\") for i, d in enumerate(docs))
        psql(f"CREATE EXTENSION lightretriever CASCADE; SELECT lightretriever.lr_register_model('minilm', '{MODEL}');"
             "CREATE TABLE docs (id int PRIMARY KEY, body text);\n"
             f"COPY docs FROM STDIN;\n{rows}\n\\.\n")
        seconds = {side: [] for side in SIDES}
        for r in range(ROUNDS):
            for side, max_batch in SIDES.items():
                restart(max_batch)
                seconds[side].append(timed_call())
            print(f"round {r + 1}: " + ", ".join(f"{side} {s[-1]:.2f} s" for side, s in seconds.items()), flush=True)
        medians = {side: statistics.median(s) for side, s in seconds.items()}
        chunked, whole = medians.values()
        ratios = [c / w for c, w in zip(*seconds.values())]
        print(f"median: " + ", ".join(f"{side} {m:.2f} s" for side, m in medians.items())
              + f"; chunked / one request {chunked / whole:.3f} (per round {', '.join(f'{x:.3f}' for x in ratios)})")
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "stop"], env=ENV)


if __name__ == "__main__":
    sys.exit(main())
