#!/usr/bin/env python3
"""Search side by side on a live auto-encoded table (`make bench-search`; stdlib only, psql and pgbench).

On a throwaway cluster with the installed extension and its encoder worker:
  * pgbench, 1/8/32 clients, against CISI (1,460 abstracts) and a synthetic table (100k short texts
    drawn from CISI's words), both auto-encoded (MiniLM dense + SPLADE-tiny sparse), HNSW on the
    dense column:
      (a) ORDER BY emb <#> lr_encode_query(q) LIMIT 10        -- the lookup table, in the backend
      (b) ORDER BY emb <#> lr_encode_document(q) LIMIT 10     -- the query through the full model (worker)
      (c) lr_search(table, q, 10)                              -- hybrid, fused in SQL
      (d) ORDER BY emb <#> v LIMIT 10, v the query's lr_encode_query vector read from a table
          -- the same statement with no encoding at all: pgvector's HNSW scan and the statement
    QPS, p50 and p99 per case, (a)/(b), and (d)/(b): the most any query encoder could reach;
  * lr_encode_query's cost per call inside SQL (2 × 20,000 calls in one statement, minus the same
    statement without the call), fastest of 5;
  * memory: Pss and private memory of 32 backends that each ran lr_encode_query, against the table
    file's size.
Writes docs/bench/search.json and docs/bench/search.svg. LR_BENCH_SEARCH_ROWS (default 100000),
LR_BENCH_SEARCH_SECONDS (default 10 per pgbench run), LR_BENCH_SEARCH_ROUNDS (default 3, interleaved; q/s is the
median round), LR_BENCH_SEARCH_QUICK=1 (1,000 synthetic rows, 5 s, 1 round),
LR_BENCH_SEARCH_KEEP=1 (leave the cluster up), LR_BENCH_SEARCH_REUSE=1 (measure again on it),
LR_BENCH_SEARCH_ONLY=memory (the memory figures alone, about a minute).
"""
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("LR_BENCH_SEARCH_QUICK") == "1"
SYNTHETIC_ROWS = int(os.environ.get("LR_BENCH_SEARCH_ROWS", "1000" if QUICK else "100000"))
SECONDS = int(os.environ.get("LR_BENCH_SEARCH_SECONDS", "5" if QUICK else "10"))
# Rounds of every case in turn, the order rotated each round: run order moved single runs by
# ±20 %. A case's q/s is its median round; its latencies pool every round's transactions.
ROUNDS = int(os.environ.get("LR_BENCH_SEARCH_ROUNDS", "1" if QUICK else "3"))
CLIENTS = [1, 8, 32]
CASES = ["lookup", "full", "hybrid", "vector"]
PORT = int(os.environ.get("LR_PGPORT", "28880"))
CLUSTER = Path(os.environ.get("LR_CLUSTER_DIR", f"/tmp/lightretriever-bench-search-{PORT}"))
SOCK = CLUSTER / "sock"
MODELS = Path(os.environ.get("LR_MODEL_ROOT", "/opt/lightretriever/models"))
CISI = ROOT.parent / "shared" / "data" / "cisi"
DB = "postgres"  # the database the encoder workers drain
ENV = dict(os.environ, LR_PGPORT=str(PORT), LR_CLUSTER_DIR=str(CLUSTER))


def psql(sql, db=DB, quiet=True):
    out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres",
                          "-d", db, "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {sql[:200]}\n{out.stderr}")
    return out.stdout.strip()


def log(msg):
    print(msg, flush=True)


def load_cisi():
    docs = [json.loads(l) for l in open(CISI / "corpus.jsonl")]
    queries = [json.loads(l) for l in open(CISI / "queries.jsonl")]
    return docs, queries


def copy_rows(table, columns, rows):
    """COPY rows (tuples of python values) into table via psql's stdin."""
    def esc(v):
        return "\\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", " ").replace("\n", " ").replace("\r", " ")
    data = "".join("\t".join(esc(v) for v in r) + "\n" for r in rows)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-d", DB,
                    "-c", f"COPY {table} ({', '.join(columns)}) FROM STDIN"], input=data, text=True, check=True)


def setup(docs, queries):
    t0 = time.time()
    psql("CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE")
    psql(f"SELECT lightretriever.lr_register_model('minilm', '{MODELS / 'all-minilm-l6-v2'}')")
    psql(f"SELECT lightretriever.lr_register_model('splade', '{MODELS / 'splade-tiny'}')")
    psql("SELECT lightretriever.lr_build_query_table('minilm')")
    psql("ALTER DATABASE postgres SET lightretriever.default_model = 'minilm'; "
         "ALTER DATABASE postgres SET lightretriever.default_sparse_model = 'splade'")
    psql("CREATE TABLE bench_queries (qid int PRIMARY KEY, text text NOT NULL)")
    copy_rows("bench_queries", ["qid", "text"], [(i + 1, q["text"]) for i, q in enumerate(queries)])
    psql("CREATE TABLE cisi (id bigint PRIMARY KEY, body text)")
    copy_rows("cisi", ["id", "body"], [(int(d["_id"]), (d.get("title", "") + ". " + d["text"]).strip()) for d in docs])
    # Synthetic short texts from CISI's own words (12 each, seeded).
    words = [w for d in docs for w in re.findall(r"[A-Za-z]{3,}", d["text"])]
    rng = random.Random(7)
    psql("CREATE TABLE synthetic (id bigint PRIMARY KEY, body text)")
    copy_rows("synthetic", ["id", "body"], [(i, " ".join(rng.choice(words) for _ in range(12))) for i in range(1, SYNTHETIC_ROWS + 1)])
    psql("SELECT lightretriever.lr_fit_sparse_query_weights('splade', 'cisi', 'body')")
    encode = {}
    for table in ["cisi", "synthetic"]:
        t = time.time()
        psql(f"SELECT lightretriever.lr_enable_auto_encoding('{table}', 'body', 'minilm', 'splade')")
        psql(f"SELECT lightretriever.lr_wait_for_encoding('{table}', interval '2 hours')")
        missing = int(psql(f"SELECT count(*) FROM {table} WHERE body_embedding IS NULL OR body_sparse IS NULL"))
        if missing:
            sys.exit(f"{table}: {missing} rows without vectors")
        encode[table] = time.time() - t
        t = time.time()
        psql(f"CREATE INDEX ON {table} USING hnsw (body_embedding vector_ip_ops)")
        psql(f"ANALYZE {table}")
        encode[table + "_hnsw"] = time.time() - t
        log(f"{table}: auto-encoded {int(psql(f'SELECT count(*) FROM {table}'))} rows in {encode[table]:.0f} s, HNSW in {time.time() - t:.0f} s")
    return {"setup_s": time.time() - t0, "auto_encoding_s": encode}


def case_sql(case, table):
    q = "(SELECT text FROM bench_queries WHERE qid = :q)"
    if case == "lookup":
        return f"SELECT id FROM {table} ORDER BY body_embedding <#> lightretriever.lr_encode_query({q}) LIMIT 10;"
    if case == "full":
        return f"SELECT id FROM {table} ORDER BY body_embedding <#> lightretriever.lr_encode_document({q}) LIMIT 10;"
    if case == "vector":
        return f"SELECT id FROM {table} ORDER BY body_embedding <#> (SELECT v FROM bench_query_vectors WHERE qid = :q) LIMIT 10;"
    return f"SELECT id FROM lightretriever.lr_search('{table}', {q}, 10);"


def query_vectors():
    """Case (d)'s vectors: each query's lookup vector, computed once (idempotent)."""
    psql("CREATE TABLE IF NOT EXISTS bench_query_vectors (qid int PRIMARY KEY, v vector); "
         "INSERT INTO bench_query_vectors SELECT qid, lightretriever.lr_encode_query(text) FROM bench_queries "
         "ON CONFLICT DO NOTHING")


# Case (d)'s vector comes from an InitPlan, so on CISI's 1,460 rows the planner rightly prefers a
# sequential scan and a sort; (d) measures the index scan that (a) and (b) run, so it forbids that.
# The disabled plan's cost (10^10) would switch JIT compilation on (~100 ms a statement): jit=off.
SETTINGS = {"vector": {"enable_seqscan": "off", "jit": "off"}}


def pgoptions(case):
    return " ".join(f"-c {name}={value}" for name, value in SETTINGS.get(case, {}).items())


def check_plans(table):
    """The dense cases must use the HNSW index in the generic plan pgbench's prepared statements
    run (a sequential scan would encode the query once per row)."""
    for case in ["lookup", "full", "vector"]:
        sql = case_sql(case, table).replace(":q", "$1").rstrip(";")
        settings = "".join(f"SET {name} = {value}; " for name, value in SETTINGS.get(case, {}).items())
        plan = psql(f"{settings}PREPARE p(int) AS {sql}; SET plan_cache_mode = force_generic_plan; EXPLAIN EXECUTE p(1)")
        if "Index Scan using" not in plan:
            sys.exit(f"{table} {case}: no index scan in the generic plan\n{plan}")


def pgbench_rounds(table, clients, nqueries):
    runs = {case: [] for case in CASES}
    for r in range(ROUNDS):
        for case in CASES[r % len(CASES):] + CASES[:r % len(CASES)]:
            runs[case].append(pgbench(case, table, clients, nqueries))
    row = {}
    for case, rs in runs.items():
        lat = sorted(x for run in rs for x in run["latencies_ms"])
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
        row[case] = {"qps": statistics.median(run["qps"] for run in rs), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                     "transactions": len(lat), "rounds_qps": [run["qps"] for run in rs]}
    return row


def pgbench(case, table, clients, nqueries):
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "q.sql"
        script.write_text(f"\\set q random(1, {nqueries})\n{case_sql(case, table)}\n")
        out = subprocess.run(["pgbench", "-n", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-M", "prepared",
                              "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(SECONDS), "-f", str(script),
                              "-l", "--log-prefix", str(Path(d) / "log"), DB], capture_output=True, text=True,
                             env=dict(os.environ, PGOPTIONS=pgoptions(case)))
        if out.returncode != 0:
            sys.exit(f"pgbench failed ({case}, {table}, {clients}):\n{out.stdout}\n{out.stderr}")
        tps = float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))
        lat = []
        for f in Path(d).glob("log*"):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]) / 1000.0)  # µs → ms
    return {"qps": tps, "latencies_ms": lat}


def per_call_cost():
    """µs per lr_encode_query call inside one statement, fastest of 5, less the statement without it."""
    def timed(sql):
        best = float("inf")
        for _ in range(5):
            out = subprocess.run(["psql", "-X", "-At", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-d", DB],
                                 input=f"\\timing on\n{sql}\n", capture_output=True, text=True, check=True).stdout
            best = min(best, float(re.findall(r"Time: ([0-9.]+) ms", out)[-1]))
        return best
    n = 20000
    out = {}
    for label, text in [("realistic", "history of the dewey decimal classification "), ("issue", "… ")]:
        with_call = timed(f"SELECT count(lightretriever.lr_encode_query('{text}' || i)) FROM generate_series(1, {n}) i;")
        without = timed(f"SELECT count(('{text}' || i)) FROM generate_series(1, {n}) i;")
        out[label] = {"query": f"'{text}' || i", "us_per_call": (with_call - without) * 1000 / n}
    return out


def smaps(pid):
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        m = re.match(r"(\w+):\s+(\d+) kB", line)
        if m:
            fields[m.group(1)] = int(m.group(2))
    return fields


def memory(backends=32):
    """32 connected backends: Pss and private memory before and after one lr_encode_query each."""
    procs = []
    for _ in range(backends):
        p = subprocess.Popen(["psql", "-X", "-At", "-h", str(SOCK), "-p", str(PORT), "-U", "postgres", "-d", DB],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        p.stdin.write("SELECT pg_backend_pid();\n")
        procs.append((p, int(p.stdout.readline())))
    before = {pid: smaps(pid) for _, pid in procs}
    for p, _ in procs:
        p.stdin.write("SELECT length(lightretriever.lr_encode_query('history of the dewey decimal classification')::text);\n")
        p.stdout.readline()
    after = {pid: smaps(pid) for _, pid in procs}
    for p, _ in procs:
        p.stdin.close()
        p.wait()
    data = psql("SHOW data_directory")
    table_file = Path(data) / psql("SELECT file FROM lightretriever.lr_query_tables WHERE model = 'minilm' ORDER BY version DESC LIMIT 1")
    size_kb = table_file.stat().st_size / 1024
    private = lambda s: s.get("Private_Clean", 0) + s.get("Private_Dirty", 0)  # noqa: E731
    growth = [private(after[pid]) - private(before[pid]) for _, pid in procs]
    pss_growth = [after[pid]["Pss"] - before[pid]["Pss"] for _, pid in procs]
    return {"backends": backends, "table_kb": size_kb,
            "private_growth_kb": {"median": statistics.median(growth), "max": max(growth)},
            "pss_growth_kb": {"median": statistics.median(pss_growth), "max": max(pss_growth)},
            "private_growth_of_table": statistics.median(growth) / size_kb}


def svg(results):
    cases = [("lookup", "#d9534f", "lr_encode_query (lookup)"), ("full", "#337ab7", "full model (worker)"), ("hybrid", "#5cb85c", "lr_search hybrid"),
             ("vector", "#999999", "stored query vector (no encoding)")]
    groups = [(t, c) for t in results["tables"] for c in CLIENTS]
    W, H, left, top, bottom = 900, 360, 60, 40, 80
    ph = H - top - bottom
    import math
    vals = [results["tables"][t][str(c)][k]["qps"] for t, c in groups for k, _, _ in cases]
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    hi = max(hi, lo + 1)
    y = lambda v: top + ph * (1 - (math.log10(v) - lo) / (hi - lo))  # noqa: E731
    gw = (W - left - 20) / len(groups)
    bw = gw * 0.8 / len(cases)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">Queries/s through pgbench (2 cores, one encoder worker): lookup vs full-model query vs hybrid</text>']
    for e in range(lo, hi + 1):
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(10**e):.1f}" y2="{y(10**e):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(10**e) + 4:.1f}" text-anchor="end">{10**e:g}</text>')
    out.append(f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" text-anchor="middle">queries/s (log scale)</text>')
    for g, (t, c) in enumerate(groups):
        x0 = left + g * gw + gw * 0.1
        for k, (case, colour, _) in enumerate(cases):
            v = results["tables"][t][str(c)][case]["qps"]
            x = x0 + k * bw
            out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bw:.1f}" height="{top + ph - y(v):.1f}" fill="{colour}"/>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle" font-size="8">{v:.0f}</text>')
        cx = left + g * gw + gw / 2
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" text-anchor="middle">{t}</text>')
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 30}" text-anchor="middle">{c} client(s)</text>')
    for k, (_, colour, label) in enumerate(cases):
        out.append(f'<rect x="{left + k * 210}" y="{H - 24}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{left + k * 210 + 16}" y="{H - 14}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def log_memory(m):
    log(f"memory, {m['backends']} backends after lr_encode_query: private growth median {m['private_growth_kb']['median']:.0f} kB "
        f"(max {m['private_growth_kb']['max']:.0f}), Pss growth median {m['pss_growth_kb']['median']:.0f} kB; "
        f"table file {m['table_kb']:.0f} kB: private growth = {100 * m['private_growth_of_table']:.1f} % of the table")


def memory_only():
    """LR_BENCH_SEARCH_ONLY=memory: the memory figures alone, on a fresh cluster with just the
    query table (a minute instead of 25); they replace those of docs/bench/search.json."""
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "start"], env=ENV, check=True)
    try:
        psql("CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE")
        psql(f"SELECT lightretriever.lr_register_model('minilm', '{MODELS / 'all-minilm-l6-v2'}')")
        psql("SELECT lightretriever.lr_build_query_table('minilm')")
        psql("ALTER DATABASE postgres SET lightretriever.default_model = 'minilm'")
        m = memory()
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "stop"], env=ENV)
    log_memory(m)
    out = ROOT / "docs" / "bench" / "search.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["memory"] = m | {"measured": "alone (LR_BENCH_SEARCH_ONLY=memory)"}
    out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote the memory figures into {out}")


def main():
    if os.environ.get("LR_BENCH_SEARCH_ONLY") == "memory":
        return memory_only()
    docs, queries = load_cisi()
    # LR_BENCH_SEARCH_REUSE=1: measure again on the cluster a previous run left up (its set-up,
    # 100k rows auto-encoded, takes most of the time); the set-up figures are that run's.
    reuse = os.environ.get("LR_BENCH_SEARCH_REUSE") == "1"
    setup_file = ROOT / "target" / "bench-search-setup.json"
    if not reuse:
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "start"], env=ENV, check=True)
    try:
        results = {"machine": {"cpus": os.cpu_count(), "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")},
                   "seconds_per_run": SECONDS, "rounds": ROUNDS, "tables": {}}
        if reuse:
            results["setup"] = json.loads(setup_file.read_text()) | {"reused": True}
        else:
            results["setup"] = setup(docs, queries)
            setup_file.parent.mkdir(exist_ok=True)
            setup_file.write_text(json.dumps(results["setup"]))
        results["per_call"] = per_call_cost()
        for label, r in results["per_call"].items():
            log(f"lr_encode_query inside SQL ({r['query']}): {r['us_per_call']:.2f} µs a call")
        results["memory"] = memory()
        m = results["memory"]
        log_memory(m)
        query_vectors()
        for table in ["cisi", "synthetic"]:
            check_plans(table)
            results["tables"][table] = {}
            for clients in CLIENTS:
                row = pgbench_rounds(table, clients, len(queries))
                row["lookup/full"] = row["lookup"]["qps"] / row["full"]["qps"]
                row["vector/full"] = row["vector"]["qps"] / row["full"]["qps"]
                results["tables"][table][str(clients)] = row
                log(f"{table:9} {clients:2} client(s): " + "  ".join(
                    f"{case} {row[case]['qps']:7.1f} q/s p50 {row[case]['p50_ms']:6.2f} ms p99 {row[case]['p99_ms']:7.2f} ms"
                    for case in CASES) + f"  lookup/full {row['lookup/full']:.1f}x  vector/full {row['vector/full']:.1f}x")
    finally:
        if os.environ.get("LR_BENCH_SEARCH_KEEP") != "1":
            subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "stop"], env=ENV)
    out = ROOT / "docs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "search.svg").write_text(svg(results))
    log(f"wrote {out / 'search.json'} and {out / 'search.svg'}")


if __name__ == "__main__":
    main()
