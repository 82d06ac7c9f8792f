#!/usr/bin/env python3
"""Sparse query weights fitted on spans (issue 17), measured label-free.

Today the sparse query is count × idf. Here each vocabulary id's weight is
idf · exp(θ_t), fitted by InfoNCE on the inverse-cloze pairs of the *training* documents that
`lr-eval --dump` writes (query = a span cut out of a document; positive = the rest of that
document as SPLADE encodes it; negatives = every other document). The held-out documents' cloze
pairs judge it (known-item MRR@10, sparse alone and in lr_search's z-score hybrid), and CISI's
judged queries are printed for the record.

usage: sparse_weight_study.py DUMP_DIR [DUMP_DIR ...]"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from quality_study import Corpus, mrr10, ndcg10, run_system, side  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MODEL = "/opt/lightretriever/models/all-minilm-l6-v2"


def counts(c, text):
    q = {}
    for t in c.ids(text)[:512]:
        q[t] = q.get(t, 0.0) + 1.0
    return q


def fit(c, pairs, rests, tau, lam, epochs, lr=0.05, seed=0):
    """θ per vocabulary id; returns the weights idf·exp(θ) and the per-epoch validation MRR."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(pairs))
    n_val = max(1, len(pairs) // 10)
    val, train = idx[:n_val], idx[n_val:]
    theta = np.zeros_like(c.idf, dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    step = 0
    qs = [counts(c, q) for _, q in pairs]

    def scores(i, w):
        q = qs[i]
        ids = np.fromiter(q.keys(), dtype=np.int64)
        cw = np.fromiter(q.values(), dtype=np.float64) * w[ids]
        cols = c.sparse_docs[:, ids].astype(np.float64)
        src = pairs[i][0]
        cols[src] = rests[i][ids]
        return cols @ cw, ids, cols

    def val_mrr(w):
        out = []
        for i in val:
            s, _, _ = scores(i, w)
            r, _ = side(s.astype(np.float32), True)
            out.append(mrr10(r[:10].tolist(), pairs[i][0]))
        return float(np.mean(out))

    w = c.idf.astype(np.float64)
    history = [val_mrr(w)]
    best = (history[0], w.copy())
    for _ in range(epochs):
        rng.shuffle(train)
        for b in range(0, len(train), 64):
            grad = np.zeros_like(theta)
            touched = set()
            for i in train[b:b + 64]:
                w_now = c.idf * np.exp(theta)
                s, ids, cols = scores(i, w_now)
                z = s / tau
                p = np.exp(z - z.max())
                p /= p.sum()
                p[pairs[i][0]] -= 1.0
                q = qs[i]
                cvals = np.fromiter(q.values(), dtype=np.float64)
                grad[ids] += cvals * w_now[ids] * (cols.T @ p) / tau
                touched.update(ids.tolist())
            t = np.fromiter(touched, dtype=np.int64)
            g = grad[t] / 64 + lam * theta[t]
            step += 1
            m[t] = 0.9 * m[t] + 0.1 * g
            v[t] = 0.999 * v[t] + 0.001 * g * g
            theta[t] -= lr * (m[t] / (1 - 0.9 ** step)) / (np.sqrt(v[t] / (1 - 0.999 ** step)) + 1e-8)
        w = c.idf * np.exp(theta)
        history.append(val_mrr(w))
        if history[-1] > best[0]:
            best = (history[-1], w.copy())
    return best[1].astype(np.float32), history


def evaluate(c, weights, label):
    res = {}
    saved = c.idf
    c.idf = weights
    try:
        z = dict(kind="hybrid", how="z", w=0.7, depth=1000)
        sp = dict(kind="sparse")
        qv = [c.lookup(t) for _, t in c.cloze]
        for name, spec in (("sparse", sp), ("z hybrid", z)):
            out = []
            for i, ((src, text), q) in enumerate(zip(c.cloze, qv)):
                sq = c.sparse_query(text)
                docs = c.docs.copy()
                docs[src] = c.cloze_rest_dense[i]
                s = c.sparse_scores(sq)
                s[src] = sum(wt * c.cloze_rest_sparse[i][t] for t, wt in sq.items())
                sides = (side(docs @ q, False), side(s, True), docs)
                out.append(mrr10(run_system(c, spec, q, sides), src))
            res[f"cloze {name}"] = float(np.mean(out))
        if c.queries:
            index = {d: i for i, d in enumerate(c.doc_ids)}
            for name, spec in (("sparse", sp), ("z hybrid", z)):
                out = []
                for (qid, text), q in zip(c.queries, c.query_lookup):
                    rel = {index[d]: g for d, g in c.qrels[qid].items() if d in index}
                    sides = (side(c.docs @ q, False), side(c.sparse_scores(c.sparse_query(text)), True), c.docs)
                    out.append(ndcg10(run_system(c, spec, q, sides), rel))
                res[f"judged {name}"] = float(np.mean(out))
    finally:
        c.idf = saved
    print(f"  {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items()), flush=True)
    return res


def main():
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    for d in sys.argv[1:]:
        c = Corpus(d, tok)
        meta = json.load(open(os.path.join(d, "meta.json")))
        pairs = [(p["doc"], p["query"]) for p in meta["cloze_train"]]
        vocab = len(c.idf)
        rests = []
        for pairs_sparse in meta["cloze_train_rest_sparse"]:
            row = np.zeros(vocab, dtype=np.float32)
            for t, w in pairs_sparse:
                row[t] = w
            rests.append(row)
        print(f"## {c.name}: {len(pairs)} training cloze pairs, {len(c.cloze)} held-out", flush=True)
        evaluate(c, c.idf, "idf (today)")
        for tau in (1.0, 3.0):
            for lam in (0.0, 0.01):
                w, hist = fit(c, pairs, rests, tau, lam, epochs=4)
                evaluate(c, w, f"fitted τ={tau} λ={lam} (validation MRR by epoch {[round(h, 4) for h in hist]})")


if __name__ == "__main__":
    main()
