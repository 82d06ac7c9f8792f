#!/usr/bin/env python3
"""A query-time step that is not term-independent and needs no model run: a small learned
correction of the lookup vector, q' = normalise(q + W2 g(W1 q + b1) + b2), g = GELU (or the
identity: a linear control), trained label-free on fresh pseudo-queries of the corpus's training
documents (the fit's split: the dump's held-out documents are left out), then measured on the
dense side alone (docs/quality.md, "A learned correction of the lookup vector").

Training pseudo-queries, per training document: 6 spans of 4-16 words, 3 spans of 3-10 words
asked with lr_fit::QUESTION_OPENERS ("{opener} {span}?"), 2 spans of 2-5 words; each encoded by
the full model (crates/lr-eval/examples/encode_lines.rs) and by the dump's fitted table.
Objectives: "imitate" (cosine to the full model's vector of the same text) or "nce" (InfoNCE,
tau 0.05, the span's source document among all training documents). Adam 1e-3, batch 256, up to
30 epochs, early stop on a tenth of the pairs. Measured against the fitted lookup alone
(95 % paired bootstrap): judged queries (record), the dump's held-out spans, cloze and titles.

usage: nonlinear_correction_study.py DUMP CORPUS_JSONL WORK_DIR imitate|nce
       [--model-dir DIR] [--encode-lines BIN]"""
import argparse
import math
import os
import subprocess

import numpy as np

import quality_study as qs
ap = argparse.ArgumentParser()
ap.add_argument("dump")
ap.add_argument("corpus_jsonl")
ap.add_argument("work")
ap.add_argument("objective", choices=["imitate", "nce"])
ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
ap.add_argument("--encode-lines", default="target/release/examples/encode_lines")
args = ap.parse_args()
MODEL, ENC = args.model_dir, args.encode_lines
OPENERS = ["what is", "what are", "what does", "how do i", "how can i", "how does", "how to", "why is",
           "why does", "why do", "why are", "when should i", "where is", "which", "is there",
           "is it possible to", "can i", "does", "should i", "who"]

dump, corpus_jsonl, work, objective = args.dump, args.corpus_jsonl, args.work, args.objective
tag = os.path.basename(os.path.normpath(work))
os.makedirs(work, exist_ok=True)
tok = qs.load_tokenizer(MODEL)
c = qs.Corpus(dump, tok)
texts = qs.corpus_texts(dump, corpus_jsonl)
held_docs = {s for s, _ in c.held}
train_docs = [i for i in range(len(texts)) if i not in held_docs]
rng = np.random.default_rng(7)


def span(words, lo, hi):
    n = int(rng.integers(lo, hi + 1))
    n = min(n, len(words))
    s = int(rng.integers(0, len(words) - n + 1))
    return " ".join(words[s:s + n])


tpath = f"{work}/train.txt"
out, srcs = [], []
for i in train_docs:
    w = texts[i].split()
    if len(w) < 4:
        continue
    for _ in range(6):
        out.append(span(w, 4, 16))
    for _ in range(3):
        out.append(f"{OPENERS[int(rng.integers(len(OPENERS)))]} {span(w, 3, 10)}?")
    for _ in range(2):
        out.append(span(w, 2, 5))
    srcs += [i] * 11
out = [t.replace("\n", " ") for t in out]
SRC = np.array(srcs)
if not os.path.exists(f"{work}/train.f32"):
    open(tpath, "w").write("\n".join(out) + "\n")
    subprocess.run([ENC, MODEL, tpath, f"{work}/train.f32"], check=True, stderr=subprocess.DEVNULL)
train_texts = open(tpath).read().split("\n")[:-1]
Y = qs.read_f32(f"{work}/train.f32", c.dims).astype(np.float64)
Y /= np.linalg.norm(Y, axis=1, keepdims=True)
X = np.stack([c.lookup(t) for t in train_texts]).astype(np.float64)
ok = np.linalg.norm(X, axis=1) > 0
X, Y, SRC = X[ok], Y[ok], SRC[ok]
print(f"{tag}: {len(X)} training pseudo-queries, cos(lookup, full) {np.mean(np.sum(X * Y, 1)):.3f}", flush=True)


DOCS = c.docs.astype(np.float64) / np.linalg.norm(c.docs, axis=1, keepdims=True)
TD = DOCS[train_docs]
TPOS = np.searchsorted(np.array(train_docs), SRC)


def gelu(z):
    return 0.5 * z * (1 + np.tanh(0.7978845608 * (z + 0.044715 * z ** 3)))


def dgelu(z):
    t = np.tanh(0.7978845608 * (z + 0.044715 * z ** 3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t ** 2) * 0.7978845608 * (1 + 3 * 0.044715 * z ** 2)


def train(hidden, linear=False, epochs=30, lr=1e-3, wd=1e-4, seed=0, nce=None):
    r = np.random.default_rng(seed)
    n = len(X)
    perm = r.permutation(n)
    va, tr = perm[: n // 10], perm[n // 10:]
    D = X.shape[1]
    P = {"W1": r.normal(0, 1 / math.sqrt(D), (D, hidden)), "b1": np.zeros(hidden),
         "W2": np.zeros((hidden, D)), "b2": np.zeros(D)}
    m = {k: np.zeros_like(v) for k, v in P.items()}
    v2 = {k: np.zeros_like(v) for k, v in P.items()}
    step = 0

    def fwd(x):
        a = x @ P["W1"] + P["b1"]
        h = a if linear else gelu(a)
        z = x + h @ P["W2"] + P["b2"]
        return a, h, z

    def score(idx):
        _, _, z = fwd(X[idx])
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        if nce is None:
            return float(np.mean(np.sum(z * Y[idx], 1)))
        s = z @ TD.T
        return float(np.mean(1.0 / (1 + np.sum(s > s[np.arange(len(idx)), TPOS[idx]][:, None], 1))))

    best, best_p = score(va), {k: v.copy() for k, v in P.items()}
    for ep in range(epochs):
        r.shuffle(tr)
        for s in range(0, len(tr), 256):
            b = tr[s:s + 256]
            x, y = X[b], Y[b]
            a, h, z = fwd(x)
            nz = np.linalg.norm(z, axis=1, keepdims=True)
            u = z / nz
            cos = np.sum(u * y, 1, keepdims=True)
            if nce is None:
                du = -y / len(b)
            else:
                lg = (u @ TD.T) / nce
                lg -= lg.max(1, keepdims=True)
                p = np.exp(lg); p /= p.sum(1, keepdims=True)
                p[np.arange(len(b)), TPOS[b]] -= 1
                du = (p @ TD) / nce / len(b)
            dz = (du - np.sum(du * u, 1, keepdims=True) * u) / nz
            g = {"W2": h.T @ dz, "b2": dz.sum(0)}
            dh = dz @ P["W2"].T
            da = dh if linear else dh * dgelu(a)
            g["W1"] = x.T @ da
            g["b1"] = da.sum(0)
            step += 1
            for k in P:
                gk = g[k] + (wd * P[k] if k[0] == "W" else 0)
                m[k] = 0.9 * m[k] + 0.1 * gk
                v2[k] = 0.999 * v2[k] + 0.001 * gk * gk
                P[k] -= lr * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v2[k] / (1 - 0.999 ** step)) + 1e-8)
        sv = score(va)
        if sv > best:
            best, best_p = sv, {k: v.copy() for k, v in P.items()}
    P.update(best_p)
    return lambda q: fwd(q[None, :].astype(np.float64))[2][0], best


docs = c.docs.astype(np.float64)
docs /= np.linalg.norm(docs, axis=1, keepdims=True)
rels = c.relevance() if c.queries else []


def evaluate(f):
    res = {}
    if c.queries:
        s = []
        for i, (_, t) in enumerate(c.queries):
            q = f(c.lookup(t).astype(np.float64))
            s.append(qs.ndcg10(list(np.argsort(-(docs @ q), kind="stable")[:10]), rels[i]))
        res["judged"] = np.array(s)
    s = []
    for src, t in c.held:
        q = f(c.lookup(t).astype(np.float64))
        s.append(qs.mrr10(list(np.argsort(-(docs @ q), kind="stable")[:10]), src))
    res["held"] = np.array(s)
    for form in ("cloze", "title"):
        pairs = getattr(c, form)
        if not pairs:
            continue
        rest = getattr(c, f"{form}_rest_dense").astype(np.float64)
        s = []
        for i, (src, t) in enumerate(pairs):
            q = f(c.lookup(t).astype(np.float64))
            sc = docs @ q
            rr = rest[i] / np.linalg.norm(rest[i])
            sc[src] = rr @ q
            s.append(qs.mrr10(list(np.argsort(-sc, kind="stable")[:10]), src))
        res[form] = np.array(s)
    return res


ident = lambda q: q
base = evaluate(ident)
full_f = None
print(f"{tag} base: " + ", ".join(f"{k} {v.mean():.4f}" for k, v in base.items()), flush=True)
if c.queries:
    fj = []
    for i in range(len(c.queries)):
        q = c.query_full[i].astype(np.float64)
        fj.append(qs.ndcg10(list(np.argsort(-(docs @ q), kind="stable")[:10]), rels[i]))
    print(f"{tag} full-query judged {np.mean(fj):.4f}")
VARIANTS = {
    "imitate": [("linear h64", dict(hidden=64, linear=True)), ("mlp h256", dict(hidden=256)),
                ("mlp h1024", dict(hidden=1024)), ("mlp h1024 wd1e-3", dict(hidden=1024, wd=1e-3))],
    "nce": [("nce linear h64", dict(hidden=64, linear=True, nce=0.05)), ("nce mlp h256", dict(hidden=256, nce=0.05)),
            ("nce mlp h1024", dict(hidden=1024, nce=0.05)), ("nce mlp h1024 wd1e-3", dict(hidden=1024, wd=1e-3, nce=0.05))],
}
for name, kw in VARIANTS[objective]:
    f, val = train(**kw)
    r = evaluate(f)
    diffs = []
    for k, v in r.items():
        d = v - base[k]
        bs = np.random.default_rng(1).integers(0, len(d), (2000, len(d)))
        lo, hi = np.percentile(d[bs].mean(1), [2.5, 97.5])
        diffs.append(f"{k} {v.mean():.4f} ({d.mean():+.4f} [{lo:+.4f},{hi:+.4f}])")
    print(f"{tag} {name} (val {val:.3f}): " + ", ".join(diffs), flush=True)
