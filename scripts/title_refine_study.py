#!/usr/bin/env python3
"""Titles as training queries: one more InfoNCE refinement of the fitted table on the corpus's
own titles (issue 17, docs/quality.md "Titles as training queries"). Titles are the one
pseudo-query form that agreed with judgements, and the only short, human-written queries a
corpus carries. Each training document's title is a query and its stored full-model vector the
positive, every document a negative; the held-out documents (the fit's split) give none. The
epoch is chosen on 10 % of the training titles; the held-out titles, cloze pairs and judged
queries are then measured as quality_study.py measures them.

usage: title_refine_study.py DUMP_DIR CORPUS_JSONL [--epochs N] [--lr LR] [--tau T]
  (LR_ENCODE_LINES: lr-eval's encode_lines example, which encodes the training bodies once)"""
import argparse
import json
import os
import random
import subprocess

import numpy as np

import quality_study as qs


# `cargo build --release -p lr-eval --examples` builds it (CARGO_TARGET_DIR as docs/quality.md says).
ENCODE_LINES = os.environ.get("LR_ENCODE_LINES", "/work/target-quality/release/examples/encode_lines")


def encode_texts(texts, model_dir, cache, dims):
    """Full-model vectors of `texts` (one line each), encoded once by ENCODE_LINES into `cache`
    and read from it afterwards, as float64."""
    if not os.path.exists(cache):
        with open(cache + ".txt", "w") as f:
            f.writelines(t + "\n" for t in texts)
        subprocess.run([ENCODE_LINES, model_dir, cache + ".txt", cache], check=True, stderr=subprocess.DEVNULL)
    v = qs.read_f32(cache, dims)
    assert len(v) == len(texts)
    return v.astype(np.float64)


def title_pairs(c, corpus_jsonl, model_dir, cache):
    """(document index, title) of every document outside the fit's held-out split, and the
    full-model vectors of their bodies (the document without its title, as the held-out title
    form's relevant text), encoded once into `cache`."""
    held = {src for src, _ in c.held}
    docs = {}
    for line in open(corpus_jsonl):
        d = json.loads(line)
        docs[d["_id"]] = (d.get("title", "").strip(), " ".join(d.get("text", "").split()))
    pairs = [(i, docs[d][0], docs[d][1]) for i, d in enumerate(c.doc_ids)
             if i not in held and docs[d][0] and docs[d][1]]
    bodies = encode_texts([body for _, _, body in pairs], model_dir, cache, c.dims)
    return [(i, t) for i, t, _ in pairs], bodies


def mrr(c, rows, pairs, docs, bodies):
    """Known-item MRR@10 of titles against the documents, each title's own document replaced
    by its body."""
    r = 0.0
    for k, (src, text) in enumerate(pairs):
        q = lookup(c, rows, text)
        scores = docs @ q
        scores[src] = bodies[k] @ q
        order = np.argsort(-scores, kind="stable")[:10]
        hit = np.nonzero(order == src)[0]
        r += 1.0 / (hit[0] + 1) if len(hit) else 0.0
    return r / max(len(pairs), 1)


def lookup(c, rows, text):
    ids = c.ids(text)[: qs.MAX_QUERY_TOKENS]
    v = np.zeros(rows.shape[1])
    for t in ids:
        v += c.weights[t] * rows[t]
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def refine(c, rows, train, train_bodies, val, val_bodies, epochs, lr, tau, batch=64, seed=7):
    """InfoNCE over all documents, hand-written gradients through the normalisation, lazy Adam
    (as lr_fit's refinement). Returns the rows of the best validation epoch (0 = unchanged)."""
    docs = c.docs.astype(np.float64)
    rows = rows.astype(np.float64).copy()
    m, v = np.zeros_like(rows), np.zeros_like(rows)
    step = np.zeros(len(rows))
    best = (mrr(c, rows, val, docs, val_bodies), 0, rows.copy())
    print(f"  epoch 0: validation MRR@10 {best[0]:.4f}", flush=True)
    rng = random.Random(seed)
    toks = [(k, src, c.ids(t)[: qs.MAX_QUERY_TOKENS]) for k, (src, t) in enumerate(train)]
    toks = [x for x in toks if x[2]]
    for ep in range(1, epochs + 1):
        rng.shuffle(toks)
        loss = 0.0
        for b0 in range(0, len(toks), batch):
            grads = {}
            for k, src, ids in toks[b0:b0 + batch]:
                raw = np.zeros(rows.shape[1])
                for t in ids:
                    raw += c.weights[t] * rows[t]
                n = np.linalg.norm(raw)
                q = raw / n
                scores = docs @ q
                scores[src] = train_bodies[k] @ q
                logits = scores / tau
                logits -= logits.max()
                p = np.exp(logits)
                p /= p.sum()
                loss -= np.log(p[src] + 1e-30)
                gq = (p @ docs - p[src] * docs[src] + p[src] * train_bodies[k] - train_bodies[k]) / tau
                graw = (gq - q * (q @ gq)) / n
                for t in ids:
                    grads[t] = grads.get(t, 0.0) + c.weights[t] * graw
            for t, g in grads.items():
                g = g / batch
                step[t] += 1
                m[t] = 0.9 * m[t] + 0.1 * g
                v[t] = 0.999 * v[t] + 0.001 * g * g
                mh = m[t] / (1 - 0.9 ** step[t])
                vh = v[t] / (1 - 0.999 ** step[t])
                rows[t] -= lr * mh / (np.sqrt(vh) + 1e-8)
        score = mrr(c, rows, val, docs, val_bodies)
        print(f"  epoch {ep}: loss {loss / len(toks):.3f}, validation MRR@10 {score:.4f}", flush=True)
        if score > best[0] + 1e-9:
            best = (score, ep, rows.copy())
    print(f"  kept epoch {best[1]}", flush=True)
    return best[2].astype(np.float32)


def measure(c, label):
    """MRR@10 of the lookup and of lr_search's default on the held-out titles and cloze pairs,
    and nDCG@10 on the judged queries."""
    out = {}
    specs = {"dense": dict(kind="dense"), "z w=0.7": dict(kind="hybrid", how="z", w=0.7, depth=qs.CANDIDATES),
             "minmax w=0.7": dict(kind="hybrid", how="minmax", w=0.7, depth=qs.CANDIDATES)}
    for form in ("title", "cloze"):
        pairs = getattr(c, form)
        if not pairs:
            continue
        sides = [qs.sides_of(c, c.lookup(t), c.sparse_query(t), o) for (_, t), o in zip(pairs, c.overrides(form))]
        for name, spec in specs.items():
            out[f"{form} {name}"] = float(np.mean([qs.mrr10(qs.run_system(c, spec, None, sd), src) for sd, (src, _) in zip(sides, pairs)]))
    held = c.held
    out["verbatim dense"] = float(np.mean([qs.mrr10(np.argsort(-(c.docs @ c.lookup(t)), kind="stable")[:10].tolist(), src) for src, t in held]))
    if c.queries:
        rels = c.relevance()
        sides = [qs.sides_of(c, c.lookup(t), c.sparse_query(t)) for _, t in c.queries]
        for name, spec in specs.items():
            out[f"judged {name}"] = float(np.mean([qs.ndcg10(qs.run_system(c, spec, None, sd), r) for sd, r in zip(sides, rels)]))
    print(f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", metavar="DUMP_DIR")
    ap.add_argument("corpus", metavar="CORPUS_JSONL")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    a = ap.parse_args()
    c = qs.Corpus(a.dump, qs.load_tokenizer(a.model_dir))
    pairs, bodies = title_pairs(c, a.corpus, a.model_dir, os.path.join(a.dump, "train_bodies.f32"))
    order = list(range(len(pairs)))
    random.Random(11).shuffle(order)
    nval = max(1, len(pairs) // 10)
    val = [pairs[k] for k in order[:nval]]
    train = [pairs[k] for k in order[nval:]]
    val_b, train_b = bodies[order[:nval]], bodies[order[nval:]]
    print(f"## {c.name}: {len(train)} training titles, {len(val)} validation titles; lr {a.lr}, tau {a.tau}", flush=True)
    measure(c, "today's table")
    c.rows = refine(c, c.rows, train, train_b, val, val_b, a.epochs, a.lr, a.tau)
    measure(c, "refined on titles")


if __name__ == "__main__":
    main()
