#!/usr/bin/env python3
"""Query-side self-weighting of the lookup (issue 17, docs/quality.md "Self-weighting"):
measured, not kept. A warning about pseudo-queries more than a method.

One step of attention of a lookup query over its own tokens, no model at query time: with
q0 the usual lookup (Σ w_t R_t) and cos_t the cosine of row R_t with it,

    q = normalise( Σ_t w_t exp(β (cos_t − max cos)) R_t )

β > 0 leans on the tokens that agree with the rest of the query (a consensus, as a verbose
query's topic words do), β < 0 on the outliers (a query's rarest, most specific words); β = 0 is
today's lookup. Tokens then change each other's weight, so the hybrid is no longer term-
independent. Reported per β: every pseudo-query form of the dump (quality_study.report_lookup),
the judged queries by length, and, with --long-cloze, inverse-cloze pairs of 32–64-word spans
(long pseudo-queries, as the judged queries are long; written by --write-long-cloze, their rests
then encoded by `cargo run --release -p lr-eval --example encode_lines MODEL P.txt P.f32`).

usage: self_weighting_study.py DUMP [--betas -2,-1,0,1,2] [--long-cloze P]
       self_weighting_study.py DUMP --write-long-cloze P --corpus CORPUS.jsonl
"""
import argparse
import json
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_study as qs  # noqa: E402

LENGTHS = [(1, 8), (9, 16), (17, 32), (33, 64), (65, 10**6)]


class SelfWeighted(qs.TableRows):
    def __init__(self, c, beta):
        super().__init__(c)
        self.beta = beta

    def __call__(self, text):
        ids = self.c.ids(text)[:qs.MAX_QUERY_TOKENS]
        if not ids:
            return np.zeros(self.c.dims, dtype=np.float32)
        v = (self.w[ids, None] * self.rows[ids]).sum(0)
        cos = self.unit[ids] @ (v / np.linalg.norm(v))
        a = np.exp(self.beta * (cos - cos.max()))
        v = ((self.w[ids] * a)[:, None] * self.rows[ids]).sum(0)
        return (v / np.linalg.norm(v)).astype(np.float32)


def write_long_cloze(c, dump, corpus, prefix, lo=32, hi=64, per_doc=2, seed=9):
    """Inverse-cloze pairs of lo..hi-word spans of the held-out documents of 2·hi words or more."""
    texts = qs.corpus_texts(dump, corpus)
    rng = random.Random(seed)
    pairs = []
    for i in sorted({d for d, _ in c.held}):
        words = texts[i].split()
        if len(words) < 2 * hi:
            continue
        for _ in range(per_doc):
            n = rng.randint(lo, hi)
            s = rng.randint(0, len(words) - n)
            pairs.append({"doc": i, "query": " ".join(words[s:s + n]), "rest": " ".join(words[:s] + words[s + n:])})
    json.dump(pairs, open(prefix + ".json", "w"))
    with open(prefix + ".txt", "w") as f:
        f.writelines(p["rest"] + "\n" for p in pairs)
    print(f"{len(pairs)} long inverse-cloze pairs written to {prefix}.json / .txt")


def long_cloze_mrr(c, lookup, prefix):
    pairs = json.load(open(prefix + ".json"))
    rests = np.fromfile(prefix + ".f32", dtype="<f4").reshape(-1, c.dims)
    got = []
    for p, rest in zip(pairs, rests):
        q = lookup(p["query"])
        scores = c.docs @ q
        scores[p["doc"]] = rest @ q
        got.append(qs.mrr10(qs.ranking(scores)[:10].tolist(), p["doc"]))
    return float(np.mean(got)), len(got)


def judged_by_length(c, lookup, spec=None):
    """nDCG@10 of the judged queries by query length in tokens: the lookup alone, or the
    quality_study setting `spec` (e.g. the z-score hybrid)."""
    spec = spec or dict(kind="dense")
    rows = []
    for (_, text), rel in zip(c.queries, c.relevance()):
        q = lookup(text)
        ranked = qs.run_system(c, spec, q, qs.sides_of(c, q, c.sparse_query(text)))
        rows.append((len(c.ids(text)), qs.ndcg10(ranked, rel)))
    cells = []
    for lo, hi in LENGTHS:
        got = [g for n, g in rows if lo <= n <= hi]
        cells.append(f"{np.mean(got):.4f} ({len(got)})" if got else "-")
    return " | ".join(cells)


def agreement_by_length(c, lookup):
    """Mean cosine with the full model's vector and top-10 overlap with its ranking, for the
    held-out spans by length: a label-free criterion that does not reward rare-word matches."""
    texts = [t for _, t in c.held]
    lens = [len(c.ids(t)) for t in texts]
    got = []
    for text, full in zip(texts, c.held_full):
        q = lookup(text)
        top = set(qs.ranking(c.docs @ q)[:10].tolist())
        got.append((float(q @ full), len(top & set(qs.ranking(c.docs @ full)[:10].tolist())) / 10))
    cells = []
    for lo, hi in [(1, 16)] + LENGTHS[2:]:
        rows = [g for g, n in zip(got, lens) if lo <= n <= hi]
        cells.append(f"{np.mean([r[0] for r in rows]):.4f} / {np.mean([r[1] for r in rows]):.4f}" if rows else "-")
    return " | ".join(cells)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--betas", default="-2,-1,0,1,2")
    ap.add_argument("--long-cloze")
    ap.add_argument("--write-long-cloze")
    ap.add_argument("--corpus")
    a = ap.parse_args()
    tok = qs.load_tokenizer(a.model_dir)
    c = qs.Corpus(a.dump, tok)
    if a.write_long_cloze:
        write_long_cloze(c, a.dump, a.corpus, a.write_long_cloze)
        return
    betas = [float(b) for b in a.betas.split(",")]
    print(f"## {c.name}")
    for beta in betas:
        lookup = SelfWeighted(c, beta)
        qs.report_lookup(f"beta {beta:+}", c, lookup)
        if a.long_cloze:
            mrr, n = long_cloze_mrr(c, lookup, a.long_cloze)
            print(f"  long inverse cloze (32-64 words, {n} pairs), dense MRR@10: {mrr:.4f}")
        print("  held-out spans, cosine / top-10 overlap with the full model by tokens 1-16/17-32/33-64/65+: "
              + agreement_by_length(c, lookup))
        if c.queries:
            lengths = "/".join(f"{lo}-{hi}" for lo, hi in LENGTHS[:-1]) + f"/{LENGTHS[-1][0]}+"
            print(f"  judged, dense nDCG@10 by query tokens {lengths} (queries): " + judged_by_length(c, lookup))
            z = dict(kind="hybrid", how="z", w=0.7, depth=qs.CANDIDATES)
            print(f"  judged, z-score hybrid nDCG@10 by query tokens {lengths}: " + judged_by_length(c, lookup, z), flush=True)
    if c.queries:
        full = {text: v for (_, text), v in zip(c.queries, c.query_full)}
        print("full-model dense, judged nDCG@10 by query tokens (reference): " + judged_by_length(c, full.__getitem__))


if __name__ == "__main__":
    main()
