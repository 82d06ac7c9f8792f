#!/usr/bin/env python3
"""Bigram rows on top of the fitted table (issue 17, docs/quality.md "Bigram rows"): measured,
not kept.

A lookup query is a bag of context-free token rows. This asks whether rows for adjacent token
pairs (a lookup too, no model at query time) bring the context the full encoder has:

    q = normalise( Σ_t w_t R_t  +  Σ_(a,b) √(w_a w_b) Z_ab )

with the fitted table R and its idf weights w fixed, and Z learnt on spans of the training
documents (never the fit's held-out ones) by one of two objectives:

- ridge:   Z fits the residual ‖Σ w R‖ · y − Σ w R of each span towards its full-model vector y
           (conjugate gradients, λ from --lambdas); needs the spans' full-model vectors, written
           by `cargo run --release -p lr-eval --example encode_lines MODEL SPANS.txt SPANS.f32`
           from the SPANS.txt this script writes (--write-spans);
- infonce: Z trained as the fit's refinement is (InfoNCE against every document, temperature
           0.05, Adam), pairs kept only when found in --min-docs training documents.

Reported per setting: the fit's own criterion (held-out verbatim spans, dense MRR@10), title and
inverse-cloze pseudo-queries (dense, z-score and min-max hybrids at w = 0.7, MRR@10) and the
judged queries where the dump has them (nDCG@10, record only).

usage: bigram_study.py DUMP CORPUS.jsonl --write-spans SPANS          (then encode SPANS.txt)
       bigram_study.py DUMP CORPUS.jsonl --objective ridge --spans SPANS [--lambdas 3,10,30]
       bigram_study.py DUMP CORPUS.jsonl --objective infonce [--min-docs 3] [--epochs 3] [--lr 1e-3]
"""
import argparse
import json
import math
import os
import random
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_study as qs  # noqa: E402


def training_spans(c, dump, corpus, per_doc, seed):
    """(document, span text) for `per_doc` spans of 4–16 words of every training document."""
    held = {d for d, _ in c.held}
    rng = random.Random(seed)
    out = []
    for i, text in enumerate(qs.corpus_texts(dump, corpus)):
        words = text.split()
        if i in held or not words:
            continue
        for _ in range(per_doc):
            n = rng.randint(4, 16)
            s = rng.randint(0, max(0, len(words) - n))
            out.append((i, " ".join(words[s:s + n])))
    return out


def pairs_of(ids):
    return list(zip(ids, ids[1:]))


class BigramLookup:
    def __init__(self, c, vocab):
        self.c, self.vocab = c, vocab
        self.w = c.weights.astype(np.float64)
        self.rows = c.rows.astype(np.float64)
        self.z = np.zeros((len(vocab), c.dims))

    def pair_weight(self, a, b):
        return math.sqrt(self.w[a] * self.w[b])

    def unigram_sum(self, ids):
        return (self.w[ids, None] * self.rows[ids]).sum(0) if ids else np.zeros(self.c.dims)

    def present(self, ids):
        return [(self.vocab[p], self.pair_weight(*p)) for p in pairs_of(ids) if p in self.vocab]

    def __call__(self, text):
        ids = self.c.ids(text)[:qs.MAX_QUERY_TOKENS]
        v = self.unigram_sum(ids)
        for j, w in self.present(ids):
            v = v + w * self.z[j]
        n = np.linalg.norm(v)
        return (v / n if n > 0 else v).astype(np.float32)


def fit_ridge(lk, ids_list, targets, lam, iterations=40):
    """min Σ_s ‖T_s − Σ_p w_p Z_p‖² + λ‖Z‖² by conjugate gradients (all dimensions at once)."""
    rows, cols, vals = [], [], []
    t = np.zeros_like(targets)
    for s, ids in enumerate(ids_list):
        u = lk.unigram_sum(ids)
        t[s] = np.linalg.norm(u) * targets[s] - u
        for j, w in lk.present(ids):
            rows.append(s), cols.append(j), vals.append(w)
    rows, cols, vals = np.array(rows), np.array(cols), np.array(vals)

    def b(z):
        out = np.zeros_like(t)
        np.add.at(out, rows, vals[:, None] * z[cols])
        return out

    def bt(x):
        out = np.zeros_like(lk.z)
        np.add.at(out, cols, vals[:, None] * x[rows])
        return out

    rhs = bt(t)
    z = np.zeros_like(lk.z)
    r = rhs.copy()
    p = r.copy()
    rs = (r * r).sum()
    for _ in range(iterations):
        ap = bt(b(p)) + lam * p
        alpha = rs / (p * ap).sum()
        z += alpha * p
        r -= alpha * ap
        rn = (r * r).sum()
        if math.sqrt(rn) < 1e-4 * math.sqrt((rhs * rhs).sum()):
            break
        p = r + (rn / rs) * p
        rs = rn
    lk.z = z


def infonce_epoch(lk, ids_list, sources, lr, state, tau=0.05, batch=256, seed=3):
    """One epoch of InfoNCE on Z alone (unigram rows fixed), lazy Adam as the fit's refinement."""
    docs = lk.c.docs.astype(np.float64)
    base = np.stack([lk.unigram_sum(ids) for ids in ids_list])
    present = [lk.present(ids) for ids in ids_list]
    m, v = state.setdefault("m", np.zeros_like(lk.z)), state.setdefault("v", np.zeros_like(lk.z))
    order = np.random.default_rng(seed + state.get("epoch", 0)).permutation(len(ids_list))
    state["epoch"] = state.get("epoch", 0) + 1
    for b0 in range(0, len(order), batch):
        bt = order[b0:b0 + batch]
        x = base[bt].copy()
        for r, s in enumerate(bt):
            for j, w in present[s]:
                x[r] += w * lk.z[j]
        n = np.linalg.norm(x, axis=1, keepdims=True)
        q = x / n
        logits = q @ docs.T / tau
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(bt)), sources[bt]] -= 1
        gq = p @ docs / tau / len(bt)
        gx = (gq - q * (q * gq).sum(1, keepdims=True)) / n
        grad = defaultdict(float)
        for r, s in enumerate(bt):
            for j, w in present[s]:
                grad[j] = grad[j] + w * gx[r]
        if not grad:
            continue
        js = np.fromiter(grad.keys(), int)
        g = np.stack(list(grad.values()))
        state["step"] = state.get("step", 0) + 1
        k = state["step"]
        m[js] = 0.9 * m[js] + 0.1 * g
        v[js] = 0.999 * v[js] + 0.001 * g * g
        lk.z[js] -= lr * (m[js] / (1 - 0.9 ** k)) / (np.sqrt(v[js] / (1 - 0.999 ** k)) + 1e-8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump")
    ap.add_argument("corpus")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--write-spans")
    ap.add_argument("--spans", help="prefix of SPANS.txt / SPANS.f32 / SPANS.docs.json (ridge)")
    ap.add_argument("--objective", choices=("ridge", "infonce"))
    ap.add_argument("--lambdas", default="3,10,30")
    ap.add_argument("--min-docs", type=int, default=1)
    ap.add_argument("--per-doc", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    tok = qs.load_tokenizer(a.model_dir)
    c = qs.Corpus(a.dump, tok)
    if a.write_spans:
        spans = training_spans(c, a.dump, a.corpus, 16, 5)
        with open(a.write_spans + ".txt", "w") as f:
            f.writelines(" ".join(t.split()) + "\n" for _, t in spans)
        json.dump([d for d, _ in spans], open(a.write_spans + ".docs.json", "w"))
        print(f"{len(spans)} spans written to {a.write_spans}.txt")
        return
    if a.objective == "ridge":
        texts = open(a.spans + ".txt").read().split("\n")[:-1]
        sources = np.array(json.load(open(a.spans + ".docs.json")))
        targets = np.fromfile(a.spans + ".f32", dtype="<f4").reshape(-1, c.dims).astype(np.float64)
        assert len(texts) == len(targets) == len(sources)
    else:
        spans = training_spans(c, a.dump, a.corpus, a.per_doc, 11)
        texts, sources = [t for _, t in spans], np.array([d for d, _ in spans])
    ids_list = [c.ids(t)[:qs.MAX_QUERY_TOKENS] for t in texts]
    # pair vocabulary: adjacent token pairs of the training spans, in at least --min-docs documents
    docs_of = defaultdict(set)
    for src, ids in zip(sources, ids_list):
        for p in pairs_of(ids):
            docs_of[p].add(int(src))
    kept = [p for p, ds in docs_of.items() if len(ds) >= a.min_docs]
    print(f"{c.name}: {len(texts)} training spans, {len(kept)} pairs in >= {a.min_docs} documents", flush=True)
    lk = BigramLookup(c, {p: i for i, p in enumerate(kept)})
    qs.report_lookup("without bigram rows", c, lk)
    if a.objective == "ridge":
        for lam in (float(x) for x in a.lambdas.split(",")):
            fit_ridge(lk, ids_list, targets, lam)
            qs.report_lookup(f"ridge, lambda {lam}", c, lk)
    else:
        state = {}
        for epoch in range(1, a.epochs + 1):
            infonce_epoch(lk, ids_list, sources, a.lr, state)
            qs.report_lookup(f"infonce, epoch {epoch}", c, lk)


if __name__ == "__main__":
    main()
