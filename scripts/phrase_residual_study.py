#!/usr/bin/env python3
"""Phrase residuals from the full model: token interaction with nothing fitted per pair (issue 17,
docs/quality.md "Phrase residuals from the full model").

The bigram study fitted a row per adjacent pair and memorised. Here every adjacent pair of
content words found in two or more documents gets, with no fitting, what the full model reads
into the pair beyond its parts: `Δ_ab = enc("a b") − (enc("a") + enc("b")) / 2`, each text
encoded alone by the document model (the untrained rows' common component cancels). A query
adds the mean residual of its pairs: `q = normalise(q0 + γ · mean Δ)`, `q0` today's lookup.
Still a lookup at query time, and no longer term-independent.

usage: phrase_residual_study.py DUMP_DIR CORPUS_JSONL [--min-df N] [--gammas G,G,...]
  (LR_ENCODE_LINES: lr-eval's encode_lines example, as in title_refine_study.py)"""
import argparse
import collections
import os

import numpy as np

import quality_study as qs
from title_refine_study import encode_texts


def words(tok, text):
    """Lower-cased words as the model's pre-tokenizer splits them; None marks a break (a
    stopword, punctuation or a number), so that pairs never span one."""
    out = []
    for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
        out.append(w if w.isalpha() and w not in qs.STOP and len(w) > 1 else None)
    return out


def pairs_of(ws):
    return [(a, b) for a, b in zip(ws, ws[1:]) if a and b]


class Phrases:
    def __init__(self, c, corpus_jsonl, model_dir, min_df):
        self.tok = c.tok
        df = collections.Counter()
        for text in qs.corpus_texts(c.dump_dir, corpus_jsonl):
            df.update(set(pairs_of(words(self.tok, text))))
        kept = sorted(p for p, n in df.items() if n >= min_df)
        vocab = sorted({w for p in kept for w in p})
        tag = f"phrases_df{min_df}"
        pv = encode_texts([f"{a} {b}" for a, b in kept], model_dir, os.path.join(c.dump_dir, tag + "_pairs.f32"), c.dims)
        wv = encode_texts(vocab, model_dir, os.path.join(c.dump_dir, tag + "_words.f32"), c.dims)
        wi = {w: i for i, w in enumerate(vocab)}
        self.delta = {p: pv[k] - 0.5 * (wv[wi[p[0]]] + wv[wi[p[1]]]) for k, p in enumerate(kept)}
        norms = [np.linalg.norm(d) for d in self.delta.values()]
        print(f"{len(kept)} pairs in {min_df}+ documents over {len(vocab)} words; residual length mean {np.mean(norms):.3f}", flush=True)

    def residual(self, text):
        ds = [self.delta[p] for p in pairs_of(words(self.tok, text)) if p in self.delta]
        return np.mean(ds, axis=0) if ds else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", metavar="DUMP_DIR")
    ap.add_argument("corpus", metavar="CORPUS_JSONL")
    ap.add_argument("--min-df", type=int, default=2)
    ap.add_argument("--gammas", default="0,0.25,0.5,1")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    a = ap.parse_args()
    c = qs.Corpus(a.dump, qs.load_tokenizer(a.model_dir))
    c.dump_dir = a.dump
    phrases = Phrases(c, a.corpus, a.model_dir, a.min_df)
    base_lookup = qs.Corpus.lookup
    forms = {"verbatim": [(s, t) for s, t in c.held]}
    specs = {"dense": dict(kind="dense"), "z w=0.7": dict(kind="hybrid", how="z", w=0.7, depth=qs.CANDIDATES),
             "minmax w=0.7": dict(kind="hybrid", how="minmax", w=0.7, depth=qs.CANDIDATES)}
    for gamma in [float(g) for g in a.gammas.split(",")]:
        def lookup(self, text, gamma=gamma):
            q = base_lookup(self, text).astype(np.float64)
            r = phrases.residual(text)
            if r is None or gamma == 0:
                return q.astype(np.float32)
            v = q + gamma * r
            return (v / np.linalg.norm(v)).astype(np.float32)
        c.lookup = lookup.__get__(c)
        out = {}
        for form in ("verbatim", "title", "cloze", "judged"):
            if form == "judged":
                if not c.queries:
                    continue
                pairs, overrides = c.queries, [None] * len(c.queries)
                rels = c.relevance()
                measure = lambda ranked, i: qs.ndcg10(ranked, rels[i])
            else:
                pairs = forms.get(form) or getattr(c, form)
                if not pairs:
                    continue
                overrides = c.overrides(form) if form != "verbatim" else [None] * len(pairs)
                measure = lambda ranked, i, pairs=pairs: qs.mrr10(ranked, pairs[i][0])
            with_pairs = sum(phrases.residual(t) is not None for _, t in pairs)
            sides = [qs.sides_of(c, c.lookup(t), c.sparse_query(t), o) for (_, t), o in zip(pairs, overrides)]
            for name, spec in specs.items():
                if form == "verbatim" and name != "dense":
                    continue
                out[f"{form} {name}"] = float(np.mean([measure(qs.run_system(c, spec, None, sd), i) for i, sd in enumerate(sides)]))
            out[f"{form} queries with a pair"] = with_pairs / len(pairs)
        print(f"γ = {gamma}: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()), flush=True)


if __name__ == "__main__":
    main()
