#!/usr/bin/env python3
"""The 1 GB query table (issue 15): a 128,256 x 4,096 f16 table (Llama-3-8B's vocabulary and
width: a one-layer random model of that shape, scripts/make_test_models.py --real
llama-3-8b-vocab) is built, stored in the database, and written again from the stored bytes as
a server without the file does (a replica, a restored dump, a Citus node). The backend's private
memory (RssAnon of /proc/<pid>/status) is sampled every 20 ms throughout: both must stream.
Prints peaks and times; writes docs/bench/table-store.json. `make bench-table-store`.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("LR_BENCH_PORT", "28890"))
CLUSTER = Path(f"/tmp/lightretriever-cluster-{PORT}")
SOCK = CLUSTER / "sock"
MODELS = ROOT / "target/lr-bench-table"
MODEL = MODELS / "real-llama-3-8b-vocab"
ENV = dict(os.environ, LR_PGPORT=str(PORT), LR_CLUSTER_DIR=str(CLUSTER))


def psql(sql, quiet=True):
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres",
                          "-d", "postgres", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {sql}\n{out.stderr}")
    return out.stdout.strip()


def rss_anon_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def run_sampled(sql, marker):
    """Runs `sql` in its own session; returns (seconds, peak RssAnon MiB, RssAnon MiB at its start)."""
    started = time.monotonic()
    proc = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres",
                             "-d", "postgres", "-c", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid, first, peak = None, None, 0
    while proc.poll() is None:
        if pid is None:
            found = psql(f"SELECT pid FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid() LIMIT 1")
            pid = int(found) if found else None
        if pid is not None:
            kb = rss_anon_kb(pid)
            if kb is not None:
                first = kb if first is None else first
                peak = max(peak, kb)
        time.sleep(0.02)
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"failed: {sql}\n{err}")
    return time.monotonic() - started, peak / 1024, (first or 0) / 1024


def main():
    if not (MODEL / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts/make_test_models.py"), "--out", str(MODELS), "--real", "llama-3-8b-vocab"], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(MODELS)], check=True)
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "start"], env=ENV, check=True)
    try:
        psql("CREATE EXTENSION lightretriever CASCADE")
        psql(f"SELECT lightretriever.lr_register_model('big', '{MODEL}')")
        build_s, build_peak, build_start = run_sampled("SELECT lightretriever.lr_build_query_table('big', dtype => 'f16') /* lr-bench-build */", "lr-bench-build")
        rows, dims, file = psql("SELECT rows || '|' || dims || '|' || file FROM lightretriever.lr_query_tables").split("|")
        chunks, stored = psql("SELECT count(*) || '|' || sum(length(data)) FROM lightretriever.lr_query_table_chunks").split("|")
        path = CLUSTER / "data" / file
        size = path.stat().st_size
        path.unlink()  # as a replica or a restored dump: no file, only the stored bytes
        write_s, write_peak, write_start = run_sampled("SELECT lightretriever.lr_encode_query('the river', 'big') IS NOT NULL /* lr-bench-write */", "lr-bench-write")
        written = path.exists() and path.stat().st_size == size
        hit_s, hit_peak, _ = run_sampled("SELECT lightretriever.lr_encode_query('the river', 'big') IS NOT NULL /* lr-bench-hit */", "lr-bench-hit")
    finally:
        if not os.environ.get("LR_BENCH_KEEP"):  # keep the cluster to look at it
            subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "stop"], env=ENV)
    result = {
        "table": {"rows": int(rows), "dims": int(dims), "dtype": "f16", "file_bytes": size, "stored_bytes": int(stored), "chunks": int(chunks)},
        "build": {"seconds": round(build_s, 1), "backend_rss_anon_peak_mib": round(build_peak, 1), "backend_rss_anon_start_mib": round(build_start, 1)},
        "write_from_database": {"seconds": round(write_s, 1), "backend_rss_anon_peak_mib": round(write_peak, 1),
                                "backend_rss_anon_start_mib": round(write_start, 1), "file_written_whole": written},
        "first_lookup_with_the_file": {"seconds": round(hit_s, 2), "backend_rss_anon_peak_mib": round(hit_peak, 1)},
        "machine": "2 CPU cores; random one-layer model of Llama-3-8B's vocabulary and width",
    }
    out = ROOT / "docs/bench/table-store.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not written or write_peak > 256 or build_peak > 512:
        sys.exit("the 1 GB table did not stream (see the peaks above)")


if __name__ == "__main__":
    main()
