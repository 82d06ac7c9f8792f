#!/usr/bin/env python3
"""Document encoding, side by side, in interleaved runs on the same texts, weights, tokenizer and
thread count (2): our encoders in-process (native kernels, and candle-transformers' ops, the CUDA path, as
they ran on the CPU before the native ones), the worker pipeline through SQL (`lr_encode_documents` and
one call per row, and auto-encoding on a throwaway cluster; needs `make install`), and ONNX Runtime on an ONNX export
of the same weights, and (MiniLM) sentence-transformers on PyTorch, what an app would run instead;
MiniLM (dense) and SPLADE-tiny (sparse) on short, medium and long texts.
Then a decoder LLM at Qwen2.5-0.5B's shape (random weights), native against candle's ops, in
GFLOP/s against the machine's measured f32 peak (FMA rate of both cores; best sgemm).

Run with target/bench-venv/bin/python (scripts/setup_bench_encode.sh makes it); `make bench-encode`.
Writes docs/bench/encode.json and docs/bench/encode.svg and prints Markdown tables.
"""
import os

THREADS = 2
# Before numpy / tokenizers start their pools: OpenBLAS (sgemm yardstick), rayon (tokenizers).
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
    os.environ[var] = str(THREADS)
os.environ["TOKENIZERS_PARALLELISM"] = "true"

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_ROOT = Path(os.environ.get("LR_MODEL_ROOT", "/opt/lightretriever/models"))
# shared/ sits in the checkout or beside it.
CISI = Path(os.environ.get("LR_CISI", next((p for p in (ROOT / "shared/data/cisi", ROOT.parent / "shared/data/cisi") if p.is_dir()), "")))
WORK = ROOT / "target/lr-bench"
MODELS = {"all-minilm-l6-v2": "dense", "splade-tiny": "sparse"}
SETS = {"short": (512, 128), "medium": (150, 48), "long": (60, 24)}  # docs: full, --quick
BATCH = 32
OPSET = 17  # torch 1.13's newest; LayerNormalization is a single op from 17
MIN_COS = {"dense": 0.99999, "sparse": 0.9999}


def max_length(model_dir):
    """The model's max tokens (specials included), read as lr-model's ModelInfo reads it:
    sentence-transformers' max_seq_length if present, else max_position_embeddings."""
    st = model_dir / "sentence_bert_config.json"
    if st.is_file() and "max_seq_length" in json.loads(st.read_text()):
        return json.loads(st.read_text())["max_seq_length"]
    return json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]


def load_tokenizer(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()  # MiniLM's tokenizer.json pads to 128; we pad each batch to its longest
    tok.enable_truncation(max_length(model_dir))  # defaults = the Rust crate's TruncationParams
    return tok


# ---------------------------------------------------------------- text sets


def make_sets(quick):
    """Deterministic text sets from CISI; token counts measured with MiniLM's (uncased BERT) vocab."""
    docs = [json.loads(line) for line in open(CISI / "corpus.jsonl")]
    queries = [json.loads(line) for line in open(CISI / "queries.jsonl")]
    tok = load_tokenizer(MODEL_ROOT / "all-minilm-l6-v2")
    tok.no_truncation()
    ntok = lambda texts: [len(e.ids) for e in tok.encode_batch(texts)]  # noqa: E731
    n = {name: full_quick[1 if quick else 0] for name, full_quick in SETS.items()}

    # short: first 10 words of titles, then queries; at least 8 tokens → about 12 on average.
    heads = [" ".join(s.split()[:10]) for s in [d["title"] for d in docs] + [q["text"] for q in queries]]
    short = [t for t, k in zip(heads, ntok(heads)) if k >= 8][: n["short"]]
    # medium: whole abstracts (title + text) of 120..260 tokens, in corpus order → about 180.
    full = [f"{d['title']}. {d['text']}".strip() for d in docs]
    medium = [t for t, k in zip(full, ntok(full)) if 120 <= k <= 260][: n["medium"]]
    # long: consecutive abstracts joined until 500 tokens, cut at the 500th token's end.
    long, cur = [], ""
    for text in full:
        cur = f"{cur} {text}".strip()
        enc = tok.encode(cur)
        if len(enc.ids) >= 500:
            long.append(cur[: enc.offsets[498][1]])  # 498 content tokens + [CLS] + [SEP]
            cur = ""
            if len(long) == n["long"]:
                break
    out = {"short": short, "medium": medium, "long": long}
    d = WORK / "encode"
    d.mkdir(parents=True, exist_ok=True)
    for name, texts in out.items():
        (d / f"{name}.json").write_text(json.dumps(texts))
    return out


# ---------------------------------------------------------------- export (a child process)


def onnx_path(model):
    return WORK / "onnx" / f"{model}.onnx"


def export_key(model):
    st = MODEL_ROOT / model / "model.safetensors"
    return {"model": str(MODEL_ROOT / model), "size": st.stat().st_size, "mtime": st.stat().st_mtime,
            "opset": OPSET, "torch": md.version("torch"), "transformers": md.version("transformers")}


def export(model):
    """From the safetensors with transformers + torch.onnx: dense → last hidden state [b, s, h];
    sparse → SPLADE weights [b, V] (logits masked to content positions, max, log1p∘relu in-graph)."""
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import BertForMaskedLM, BertModel, logging

    logging.set_verbosity_error()  # MiniLM's unused pooler weights are expected
    torch.set_num_threads(THREADS)
    src, kind, dst = MODEL_ROOT / model, MODELS[model], onnx_path(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dense":
        bert = BertModel.from_pretrained(src, add_pooling_layer=False, attn_implementation="eager").eval()

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = bert  # a submodule: its weights become initializers, not constants

            def forward(self, input_ids, attention_mask):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    else:
        # The MLM decoder weight is tied to the word embeddings (one copy in the file);
        # transformers reties it and maps the file's LayerNorm gamma/beta names.
        mlm = BertForMaskedLM.from_pretrained(src, attn_implementation="eager").eval()
        assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mlm = mlm

            def forward(self, input_ids, attention_mask, content_mask):
                logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
                keep = content_mask.bool().unsqueeze(-1)  # not [CLS]/[SEP]/padding
                logits = logits.masked_fill(~keep, float("-inf"))
                return torch.log1p(torch.relu(logits.max(dim=1).values))

    names = ["input_ids", "attention_mask"] + (["content_mask"] if kind == "sparse" else [])
    out_axes = {0: "batch", 1: "seq"} if kind == "dense" else {0: "batch"}
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"out": out_axes}
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    args = (ids, mask) if kind == "dense" else (ids, mask, mask * (ids != 101) * (ids != 102))
    net = Net().eval()
    with torch.no_grad():
        torch.onnx.export(net, args, str(dst), input_names=names, output_names=["out"],
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    onnx.checker.check_model(str(dst))
    # Other shapes than the traced ones, against torch itself.
    ids = torch.tensor([[101, 1996, 2307, 2003, 102], [101, 2307, 102, 0, 0], [101, 1037, 2307, 3231, 102]])
    mask = (ids != 0).long()
    args = (ids, mask) if kind == "dense" else (ids, mask, mask * (ids != 101) * (ids != 102))
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.no_grad():
        want = net(*args).numpy()
    diff = float(np.abs(got - want).max())
    print(f"exported {model} → {dst.relative_to(ROOT)} (opset {OPSET}); max |ORT - torch| = {diff:.2e}")
    assert diff < 1e-3, "the exported graph disagrees with torch"
    dst.with_suffix(".key.json").write_text(json.dumps(export_key(model)))


def ensure_exported(model):
    key = onnx_path(model).with_suffix(".key.json")
    if not key.is_file() or json.loads(key.read_text()) != export_key(model):
        # A child process, so that torch's thread pools never share the timed process.
        subprocess.run([sys.executable, __file__, "--export", model], check=True)


# ---------------------------------------------------------------- the two sides


class OrtEncoder:
    def __init__(self, model):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(onnx_path(model)), so, providers=["CPUExecutionProvider"])
        self.tok = load_tokenizer(MODEL_ROOT / model)
        self.kind = MODELS[model]

    def encode(self, texts):
        """Tokenize, length-sort, batches of 32 padded to their longest, infer, pool; in input order."""
        encs = self.tok.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))  # stable, as ours
        rows = [None] * len(texts)
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            width = max(len(encs[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), np.int64)
            mask = np.zeros_like(ids)
            content = np.zeros_like(ids)
            for r, i in enumerate(chunk):
                e = encs[i]
                ids[r, : len(e.ids)] = e.ids
                mask[r, : len(e.ids)] = 1
                content[r, : len(e.ids)] = 1 - np.asarray(e.special_tokens_mask)
            if self.kind == "dense":
                hidden = self.sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
                m = mask.astype(np.float32)
                pooled = np.einsum("bs,bsh->bh", m, hidden) / np.maximum(m.sum(1, keepdims=True), 1e-9)
                out = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            else:
                out = self.sess.run(None, {"input_ids": ids, "attention_mask": mask, "content_mask": content})[0]
            for r, i in enumerate(chunk):
                rows[i] = out[r]
        return np.stack(rows), sum(len(e.ids) for e in encs)


class StEncoder:
    """sentence-transformers on PyTorch (what an app would run instead): a child process that loads
    the model once, so that torch's thread pools never share the timed process; `encode` times
    SentenceTransformer.encode(texts, batch_size=32, normalize_embeddings=True) there."""

    def __init__(self, model):
        self.proc = subprocess.Popen([sys.executable, __file__, "--st-serve", model],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.out = WORK / "encode" / "st.npy"

    def encode(self, texts_file):
        self.proc.stdin.write(json.dumps({"texts": str(texts_file), "out": str(self.out)}) + "\n")
        reply = json.loads(self.proc.stdout.readline())
        return np.load(self.out), reply["seconds"]

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait()


def st_serve(model):
    """The child side of StEncoder."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    st = SentenceTransformer(str(MODEL_ROOT / model), device="cpu")
    for line in sys.stdin:
        req = json.loads(line)
        texts = json.loads(Path(req["texts"]).read_text())
        t = time.perf_counter()
        vecs = st.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
        seconds = time.perf_counter() - t
        np.save(req["out"], vecs.astype(np.float32))
        print(json.dumps({"seconds": seconds}), flush=True)


def run_ours(binary, model, texts_file, vectors=None, kernels="native"):
    out = WORK / "encode" / "ours.json"
    cmd = [str(binary), "--model", str(MODEL_ROOT / model), "--kind", MODELS[model],
           "--texts", str(texts_file), "--reps", "1", "--out", str(out), "--kernels", kernels]
    if vectors:
        cmd += ["--vectors", str(vectors)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))  # our thread count
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def min_cosine(a, b):
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    cos[(na == 0) & (nb == 0)] = 1.0  # both empty (no content tokens): equal
    return float(cos.min())


# ---------------------------------------------------------------- the worker pipeline (SQL)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT = int(os.environ.get("LR_BENCH_PGPORT", "28817"))
CLUSTER = Path(f"/tmp/lightretriever-bench-encode-{PORT}")


def extension_installed():
    sharedir = subprocess.run([PG_BIN / "pg_config", "--sharedir"], capture_output=True, text=True).stdout.strip()
    return (Path(sharedir) / "extension/lightretriever.control").is_file()


class Pipeline:
    """The worker pipeline through SQL: a throwaway cluster (scripts/cluster.sh) whose encoder
    worker runs the installed extension, with the bench's texts in a table."""

    def __init__(self):
        self.env = dict(os.environ, LR_PGPORT=str(PORT), LR_CLUSTER_DIR=str(CLUSTER))
        subprocess.run([str(ROOT / "scripts/cluster.sh"), "start"], check=True, env=self.env, stdout=subprocess.DEVNULL)
        self.psql("CREATE EXTENSION lightretriever CASCADE")
        for m in MODELS:
            self.psql(f"SELECT lightretriever.lr_register_model('{m}', '{MODEL_ROOT / m}')")
        self.psql("CREATE TABLE bench_texts (set text, i int, body text, PRIMARY KEY (set, i))")
        self.version = self.psql("SELECT extversion FROM pg_extension WHERE extname = 'lightretriever'").strip()

    def stop(self):
        subprocess.run([str(ROOT / "scripts/cluster.sh"), "stop"], env=self.env, stdout=subprocess.DEVNULL)

    def psql(self, *statements):
        # On standard input: a statement can be longer than one argument may be.
        cmd = ["psql", "-X", "-q", "-At", "-h", str(CLUSTER / "sock"), "-p", str(PORT), "-U", "postgres",
               "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        script = "".join(st.rstrip().rstrip(";") + ";\n" for st in statements)
        return subprocess.run(cmd, check=True, capture_output=True, text=True, input=script).stdout

    def load(self, name, texts):
        assert not any("$lr_bench$" in t for t in texts)
        self.psql(f"INSERT INTO bench_texts SELECT '{name}', n, t FROM "
                  f"json_array_elements_text($lr_bench${json.dumps(texts)}$lr_bench$::json) WITH ORDINALITY AS x(t, n)")

    def batch_sql(self, model, set_name):
        fn = "lr_encode_documents" if MODELS[model] == "dense" else "lr_encode_documents_sparse"
        return (f"SELECT v FROM lightretriever.{fn}((SELECT array_agg(body ORDER BY i) FROM bench_texts "
                f"WHERE set = '{set_name}'), '{model}') WITH ORDINALITY AS e(v, n) ORDER BY n")

    def vectors(self, model, set_name, dim):
        """The vectors `lr_encode_documents(_sparse)` gives, as rows of a dense matrix."""
        rows = []
        for line in self.psql(self.batch_sql(model, set_name)).splitlines():
            if MODELS[model] == "dense":
                rows.append(np.array(json.loads(line), np.float32))
            else:  # sparsevec text: {i:v,...}/dim, 1-based indices
                body = line[1:line.index("}")]
                row = np.zeros(dim, np.float32)
                for pair in filter(None, body.split(",")):
                    i, v = pair.split(":")
                    row[int(i) - 1] = float(v)
                rows.append(row)
        return np.stack(rows)

    def time_batch(self, model, set_name):
        """One `lr_encode_documents(_sparse)` call over the set, through the worker."""
        sql = self.batch_sql(model, set_name).replace("SELECT v FROM", "SELECT count(v) FROM").replace(" ORDER BY n", "")
        t = time.perf_counter()
        self.psql(sql)
        return time.perf_counter() - t

    def time_rows(self, model, set_name):
        """`lr_encode_document(_sparse)` once per row (a per-row `UPDATE` backfill's calls)."""
        fn = "lr_encode_document" if MODELS[model] == "dense" else "lr_encode_document_sparse"
        t = time.perf_counter()
        self.psql(f"SELECT count(lightretriever.{fn}(body, '{model}')) FROM bench_texts WHERE set = '{set_name}'")
        return time.perf_counter() - t

    def time_auto(self, model, set_name):
        """Auto-encoding of a table of the set's rows: enable (which enqueues them) until the
        queue is drained and every row has its vector."""
        column = "body_embedding" if MODELS[model] == "dense" else "body_sparse"
        self.psql("DROP TABLE IF EXISTS auto_docs",
                  f"CREATE TABLE auto_docs AS SELECT i AS id, body FROM bench_texts WHERE set = '{set_name}'",
                  "ALTER TABLE auto_docs ADD PRIMARY KEY (id)")
        enable = ("SELECT lightretriever.lr_enable_auto_encoding('auto_docs', 'body', 'all-minilm-l6-v2')"
                  if MODELS[model] == "dense" else
                  "SELECT lightretriever.lr_enable_auto_encoding('auto_docs', 'body', 'all-minilm-l6-v2', 'splade-tiny')")
        t = time.perf_counter()
        out = self.psql(enable, "SELECT lightretriever.lr_wait_for_encoding('auto_docs', '30 minutes')")
        seconds = time.perf_counter() - t
        assert out.strip().endswith("t"), f"auto-encoding did not finish: {out}"
        missing = self.psql(f"SELECT count(*) FROM auto_docs WHERE {column} IS NULL").strip()
        assert missing == "0", f"{missing} rows without a vector"
        self.psql("SELECT lightretriever.lr_disable_auto_encoding('auto_docs')", "DROP TABLE auto_docs")
        return seconds


def bench_pair(binary, model, set_name, texts, rounds, pipeline):
    kind = MODELS[model]
    texts_file = WORK / "encode" / f"{set_name}.json"
    ort_enc = OrtEncoder(model)

    # Warm-up of each, which also gives the vectors to compare.
    vec_file = WORK / "encode" / "ours.f32"
    ours0 = run_ours(binary, model, texts_file, vec_file)
    ort_vecs, ort_tokens = ort_enc.encode(texts)
    ours_vecs = np.fromfile(vec_file, "<f4").reshape(len(texts), -1)
    if ours0["tokens"] != ort_tokens or ours_vecs.shape != ort_vecs.shape:
        sys.exit(f"FAIL {model}/{set_name}: ours {ours0['tokens']} tokens {ours_vecs.shape}, "
                 f"ORT {ort_tokens} tokens {ort_vecs.shape}: not the same inputs")
    cos = {"ours": min_cosine(ours_vecs, ort_vecs)}
    st_enc = StEncoder(model) if kind == "dense" else None
    if st_enc:
        cos["st"] = min_cosine(st_enc.encode(texts_file)[0], ort_vecs)
    run_ours(binary, model, texts_file, vec_file, kernels="candle")
    cos["candle"] = min_cosine(np.fromfile(vec_file, "<f4").reshape(len(texts), -1), ort_vecs)
    if pipeline:
        cos["sql"] = min_cosine(pipeline.vectors(model, set_name, ort_vecs.shape[1]), ort_vecs)
    print(f"{model}/{set_name}: {len(texts)} docs, {ort_tokens} tokens, min cosine with ORT: "
          + ", ".join(f"{k} {v:.7f}" for k, v in cos.items()))
    for side, c in cos.items():
        if not c >= MIN_COS[kind]:
            sys.exit(f"FAIL {model}/{set_name}: min cosine {side}·ORT {c:.7f} < {MIN_COS[kind]}")

    runs = {"ours": [], "candle": [], "ort": []} | ({"st": []} if st_enc else {}) | ({"sql": [], "rows": [], "auto": []} if pipeline else {})
    for _ in range(rounds):  # interleaved: ours, candle, ORT, sentence-transformers, SQL, per row, auto, ours, ...
        runs["ours"].append(run_ours(binary, model, texts_file)["seconds"][0])
        runs["candle"].append(run_ours(binary, model, texts_file, kernels="candle")["seconds"][0])
        t = time.perf_counter()
        ort_enc.encode(texts)
        runs["ort"].append(time.perf_counter() - t)
        if st_enc:
            runs["st"].append(st_enc.encode(texts_file)[1])
        if pipeline:
            runs["sql"].append(pipeline.time_batch(model, set_name))
            runs["rows"].append(pipeline.time_rows(model, set_name))
            runs["auto"].append(pipeline.time_auto(model, set_name))
    res = {"model": model, "kind": kind, "set": set_name, "docs": len(texts), "tokens": ort_tokens,
           "min_cosine": cos, "gemm": ours0["gemm"], "seconds": runs}
    for side, secs in runs.items():
        res[side] = {"docs_per_s": statistics.median(len(texts) / s for s in secs),
                     "tokens_per_s": statistics.median(ort_tokens / s for s in secs)}
    res["ratios"] = {f"{side}/ort": res[side]["docs_per_s"] / res["ort"]["docs_per_s"] for side in runs if side not in ("ort", "candle", "st")}
    res["ratios"]["ours/candle"] = res["ours"]["docs_per_s"] / res["candle"]["docs_per_s"]
    if st_enc:
        st_enc.stop()
        # The worker pipeline against what an app would run instead (issue 14: ≥ 1.0×).
        res["ratios"] |= {f"{side}/st": res[side]["docs_per_s"] / res["st"]["docs_per_s"] for side in ("ours", "sql", "auto") if side in runs}
    return res


# ---------------------------------------------------------------- the decoder

DECODER = "qwen2.5-0.5b"
DECODER_SETS = {"short": (12, 64, 16), "medium": (180, 16, 8), "long": (500, 8, 8)}  # tokens, docs (full, --quick)
DECODER_BATCH = 8


def decoder_dir():
    d = WORK / f"real-{DECODER}"
    if not (d / "config.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts/make_test_models.py"), "--out", str(WORK), "--real", DECODER], check=True)
    return d


def decoder_flops(cfg, tokens):
    """Multiply-adds ×2 of one document of `tokens` tokens: every linear layer (no LM head: the
    dense vector is the last hidden state) and causal attention (token p attends to p + 1 keys)."""
    h, d, heads, kv, inter, layers = (cfg["hidden_size"], cfg["hidden_size"] // cfg["num_attention_heads"],
                                      cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"],
                                      cfg["num_hidden_layers"])
    linear = h * heads * d + 2 * h * kv * d + heads * d * h + 3 * h * inter
    attention = 2 * heads * d * tokens * (tokens + 1) / 2  # q·k and p·v over the visible keys
    return 2 * layers * (linear * tokens + attention)


def bench_decoder(binary, rounds, quick, peak):
    cfg = json.loads((decoder_dir() / "config.json").read_text())
    out = WORK / "encode" / "decoder.json"
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    results = []
    for name, (tokens, docs_full, docs_quick) in DECODER_SETS.items():
        docs = docs_quick if quick else docs_full
        runs = {"ours": [], "candle": []}
        for _ in range(rounds):
            for side, kernels in (("ours", "native"), ("candle", "candle")):
                subprocess.run([str(binary), "--model", str(decoder_dir()), "--kind", "decoder", "--doc-tokens", str(tokens),
                                "--docs", str(docs), "--batch", str(DECODER_BATCH), "--reps", "1", "--kernels", kernels,
                                "--out", str(out)], check=True, env=env)
                runs[side].append(json.loads(out.read_text())["seconds"][0])
        flops = decoder_flops(cfg, tokens) * docs
        res = {"model": DECODER, "set": name, "doc_tokens": tokens, "docs": docs, "batch": DECODER_BATCH,
               "flops": flops, "seconds": runs}
        for side, secs in runs.items():
            s = statistics.median(secs)
            res[side] = {"tokens_per_s": docs * tokens / s, "gflops": flops / s / 1e9,
                         "of_fma_peak": flops / s / 1e9 / peak["fma"]["gflops"],
                         "of_best_sgemm": flops / s / 1e9 / peak["best_sgemm_gflops"]}
        res["ours/candle"] = res["ours"]["gflops"] / res["candle"]["gflops"]
        print(f"decoder {DECODER}/{name}: {docs} docs of {tokens} tokens, batch {DECODER_BATCH}: "
              f"{res['ours']['gflops']:.0f} GFLOP/s ({res['ours']['of_fma_peak']:.0%} of the FMA peak), "
              f"candle's ops {res['candle']['gflops']:.0f}")
        results.append(res)
    return results


# ---------------------------------------------------------------- yardstick, machine, report


def numpy_sgemm(n=2048, reps=7):
    """f32 GFLOP/s of numpy's bundled OpenBLAS sgemm n×n×n on THREADS threads (median)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    a @ b  # warm-up (thread pool, pages)
    secs = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        secs.append(time.perf_counter() - t)
    return {"n": n, "threads": THREADS, "seconds": secs, "gflops": 2 * n**3 / statistics.median(secs) / 1e9}


def machine_peak(binary):
    """The machine's f32 peak, measured: the FMA rate of both cores in the widest vectors they
    have, and the best sgemm found here (ours: oneDNN's or the gemm crate's; numpy's OpenBLAS)."""
    out = WORK / "encode" / "peak.json"
    subprocess.run([str(binary), "--peak", "--out", str(out)], check=True, env=dict(os.environ, RAYON_NUM_THREADS=str(THREADS)))
    fma = json.loads(out.read_text())
    numpy = numpy_sgemm()
    return {"fma": fma, "numpy_openblas_sgemm": numpy,
            "best_sgemm_gflops": max(numpy["gflops"], fma["sgemm_gflops"])}


def machine(binary, pipeline):
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"], capture_output=True, text=True)
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": THREADS, "python": sys.version.split()[0],
            "commit": commit,  # ours is being optimised: the binary's build time tells which build ran
            "ours_binary": {"path": str(binary), "built": datetime.datetime.fromtimestamp(
                Path(binary).stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")},
            "extension": pipeline.version if pipeline else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {p: md.version(p) for p in ("onnxruntime", "onnx", "torch", "transformers", "tokenizers", "numpy", "sentence-transformers")}
            | {"python3-torch (deb)": deb.stdout, "numpy blas": f"{blas.get('name')} {blas.get('version')}"}}


SIDES = {"ours": ("ours, in-process", "#d9534f"), "sql": ("ours, lr_encode_documents(_sparse) (worker)", "#f0ad4e"),
         "rows": ("ours, one call per row (worker)", "#e8d44d"), "auto": ("ours, auto-encoding (worker)*", "#9b59b6"),
         "candle": ("candle-transformers ops", "#aaaaaa"), "ort": ("ONNX Runtime", "#337ab7"),
         "st": ("sentence-transformers (PyTorch)", "#5cb85c")}


def svg_chart(results, title):
    """Grouped bars, docs/s of every side per model × set, log scale (sets differ by 100×)."""
    sides = [s for s in SIDES if any(s in r for r in results)]  # sentence-transformers: dense only
    W, H, left, top, bottom = 900, 380, 60, 40, 100
    ph = H - top - bottom
    vals = [r[s]["docs_per_s"] for r in results for s in sides if s in r]
    lo, hi = np.floor(np.log10(min(vals))), np.ceil(np.log10(max(vals)))
    hi = max(hi, lo + 1)
    y = lambda v: top + ph * (1 - (np.log10(v) - lo) / (hi - lo))  # noqa: E731
    gw = (W - left - 20) / len(results)
    bw = gw * 0.8 / len(sides)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for e in range(int(lo), int(hi) + 1):
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(10**e):.1f}" y2="{y(10**e):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(10**e) + 4:.1f}" text-anchor="end">{10**e:g}</text>')
    out.append(f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" text-anchor="middle">docs/s (log scale)</text>')
    for g, r in enumerate(results):
        x0 = left + g * gw + gw * 0.1
        for k, side in enumerate(sides):
            if side not in r:
                continue
            v = r[side]["docs_per_s"]
            label = f"{v:.0f}" if v >= 100 else f"{v:.3g}"
            x = x0 + k * bw
            out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bw:.1f}" height="{top + ph - y(v):.1f}" fill="{SIDES[side][1]}"/>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle" font-size="8">{label}</text>')
        cx = left + g * gw + gw / 2
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" text-anchor="middle">{r["model"]}</text>')
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 30}" text-anchor="middle">{r["set"]} · ours/ORT ×{r["ratios"]["ours/ort"]:.2f}</text>')
    for k, side in enumerate(sides):
        out.append(f'<rect x="{left + (k % 3) * 260}" y="{H - 44 + (k // 3) * 18}" width="12" height="12" fill="{SIDES[side][1]}"/>')
        out.append(f'<text x="{left + (k % 3) * 260 + 16}" y="{H - 34 + (k // 3) * 18}">{SIDES[side][0]}</text>')
    out.append(f'<text x="{W - 20}" y="{H - 8}" text-anchor="end" font-size="9">* sparse rows: the table gets both columns (MiniLM and SPLADE-tiny)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(results):
    sides = [s for s in SIDES if any(s in r for r in results)]
    ratios = list(dict.fromkeys(k for r in results for k in r["ratios"]))
    rows = ["| model | set | docs | tokens | " + " | ".join(f"{s} docs/s" for s in sides) + " | "
            + " | ".join(ratios) + " |",
            "|---|---|---:|---:|" + "---:|" * (len(sides) + len(ratios))]
    for r in results:
        rows.append(f"| {r['model']} | {r['set']} | {r['docs']} | {r['tokens']} | "
                    + " | ".join(f"{r[s]['docs_per_s']:.1f}" if s in r else "" for s in sides) + " | "
                    + " | ".join(f"{r['ratios'][k]:.2f}" if k in r["ratios"] else "" for k in ratios) + " |")
    return "\n".join(rows)


def decoder_table(results, peak):
    rows = [f"| {DECODER} | tokens/doc | docs × batch {DECODER_BATCH} | ours tok/s | ours GFLOP/s | of FMA peak "
            f"({peak['fma']['gflops']:.0f}) | of best sgemm ({peak['best_sgemm_gflops']:.0f}) | candle GFLOP/s | ours/candle |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        o, b = r["ours"], r["candle"]
        rows.append(f"| {r['set']} | {r['doc_tokens']} | {r['docs']} | {o['tokens_per_s']:.0f} | {o['gflops']:.0f} | "
                    f"{o['of_fma_peak']:.0%} | {o['of_best_sgemm']:.0%} | {b['gflops']:.0f} | {r['ours/candle']:.2f} |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, fewer docs")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    p.add_argument("--rounds", type=int, help="timed rounds per side (default 5, --quick 2)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the worker pipeline (SQL) sides")
    p.add_argument("--no-decoder", action="store_true", help="skip the decoder LLM")
    p.add_argument("--bin", default=str(ROOT / "target/release/examples/encode_texts"))
    p.add_argument("--out", default=str(ROOT / "docs/bench"), help="where encode.json/encode.svg go")
    p.add_argument("--export", metavar="MODEL", help=argparse.SUPPRESS)  # the export child
    p.add_argument("--st-serve", metavar="MODEL", help=argparse.SUPPRESS)  # the sentence-transformers child
    a = p.parse_args()
    if a.export:
        return export(a.export)
    if a.st_serve:
        return st_serve(a.st_serve)
    models, sets = a.models.split(","), a.sets.split(",")
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m}")
    for s in sets:
        if s not in SETS:
            p.error(f"unknown set {s}")
    rounds = a.rounds or (2 if a.quick else 5)

    texts = make_sets(a.quick)
    for m in models:
        ensure_exported(m)
    peak = machine_peak(a.bin)
    print(f"f32 peak: FMA {peak['fma']['gflops']:.0f} GFLOP/s ({peak['fma']['isa']}, {THREADS} threads); sgemm 2048³: "
          f"ours ({peak['fma']['gemm']}) {peak['fma']['sgemm_gflops']:.0f}, numpy's OpenBLAS {peak['numpy_openblas_sgemm']['gflops']:.0f}")
    pipeline = None
    if not a.no_pipeline:
        if not extension_installed():
            sys.exit("the worker pipeline needs the extension installed (make install), or pass --no-pipeline")
        pipeline = Pipeline()
    try:
        if pipeline:
            for name in sets:
                pipeline.load(name, texts[name])
        results = [bench_pair(a.bin, m, s, texts[s], rounds, pipeline) for m in models for s in sets]
        mach = machine(a.bin, pipeline)
    finally:
        if pipeline:
            pipeline.stop()
    decoder = [] if a.no_decoder else bench_decoder(a.bin, max(1, rounds - 2), a.quick, peak)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"quick": a.quick, "rounds": rounds, "warmup": 1, "batch": BATCH, "opset": OPSET,
              "machine": mach, "peak": peak, "results": results, "decoder": decoder}
    (out / "encode.json").write_text(json.dumps(report, indent=1) + "\n")
    title = "Document encoding, docs/s, 2 threads" + (" (quick smoke run)" if a.quick else "")
    (out / "encode.svg").write_text(svg_chart(results, title))
    print()
    print(table(results))
    if decoder:
        print()
        print(decoder_table(decoder, peak))
    print(f"\nwrote {out / 'encode.json'} and {out / 'encode.svg'}")


if __name__ == "__main__":
    main()
