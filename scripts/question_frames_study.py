#!/usr/bin/env python3
"""Fits that see questions, judged label-free (docs/quality.md, "Question words fitted on
questions"). For each pair of `lr-eval --dump` directories of one corpus — a fit without questions
and one with `question_spans_per_doc` or `refine_question_spans_per_doc` — known-item MRR@10 of
the lookup, dense alone and
in lr_search's z-score fusion (w = 0.7, no smoothing), on the fit's held-out documents:

  verbatim    the fit's held-out spans
  title       held-out titles, where the corpus has them (relevant: the document without it)
  asked       the held-out spans asked with the fit's own openers: "{opener} {span}?"
  asked other the same spans asked with openers the fit never uses (OTHER_OPENERS)

and, where the corpus has judged queries, their nDCG@10 (record only: never used to choose).
Both fits hold out the same documents (same seed), so the pseudo-queries are the same.

usage: question_frames_study.py NAME BASE_DUMP VARIANT_DUMP [NAME BASE VARIANT ...] [--model-dir DIR]"""
import argparse
import random

import numpy as np

import quality_study as qs

# lr_fit::QUESTION_OPENERS, which the fit trains with
FIT_OPENERS = ["what is", "what are", "what does", "how do i", "how can i", "how does", "how to", "why is",
               "why does", "why do", "why are", "when should i", "where is", "which", "is there",
               "is it possible to", "can i", "does", "should i", "who"]
# openers the fit never sees: a check that it learned questions, not its own frames
OTHER_OPENERS = ["what happens when", "how would you", "where can i find", "could", "are there", "what about",
                 "how should", "why would", "whom", "in what way"]

SPECS = (("dense", dict(kind="dense")), ("z", dict(kind="hybrid", how="z", w=0.7, depth=qs.CANDIDATES)))


def asked(pairs, openers, seed):
    rng = random.Random(seed)
    return [(src, f"{rng.choice(openers)} {text}?") for src, text in pairs]


def measure(c):
    forms = {"verbatim": c.held, "asked": asked(c.held, FIT_OPENERS, 5), "asked other": asked(c.held, OTHER_OPENERS, 6)}
    if c.title:
        forms["title"] = c.title
    out = {}
    for form, pairs in forms.items():
        overrides = c.overrides(form) if form == "title" else [None] * len(pairs)
        got = {n: [] for n, _ in SPECS}
        for (src, text), o in zip(pairs, overrides):
            q = c.lookup(text)
            sides = qs.sides_of(c, q, c.sparse_query(text), o)
            for n, spec in SPECS:
                got[n].append(qs.mrr10(qs.run_system(c, spec, q, sides), src))
        out[form] = {n: np.array(v) for n, v in got.items()}
    if c.queries:
        got = {n: [] for n, _ in SPECS}
        for (_, text), rel in zip(c.queries, c.relevance()):
            q = c.lookup(text)
            sides = qs.sides_of(c, q, c.sparse_query(text))
            for n, spec in SPECS:
                got[n].append(qs.ndcg10(qs.run_system(c, spec, q, sides), rel))
        out["judged nDCG@10"] = {n: np.array(v) for n, v in got.items()}
    return out


def paired_ci(a, b, rng, n=2000):
    d = b - a
    idx = rng.integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(axis=1)
    return d.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("triples", nargs="+", metavar="NAME BASE VARIANT")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    a = ap.parse_args()
    if len(a.triples) % 3:
        ap.error("give NAME BASE_DUMP VARIANT_DUMP triples")
    tok = qs.load_tokenizer(a.model_dir)
    rng = np.random.default_rng(0)
    for k in range(0, len(a.triples), 3):
        name, base_dir, variant_dir = a.triples[k:k + 3]
        base, variant = qs.Corpus(base_dir, tok), qs.Corpus(variant_dir, tok)
        assert base.held == variant.held, "the two fits held out different pseudo-queries"
        rb, rv = measure(base), measure(variant)
        print(f"## {name}: {len(base.held)} held-out spans, {len(base.title)} titles, {len(base.queries)} judged queries")
        print("| form | side | default fit | with question spans | difference [95 % paired bootstrap] |")
        print("|---|---|---:|---:|---|")
        for form in rb:
            for n, _ in SPECS:
                m, lo, hi = paired_ci(rb[form][n], rv[form][n], rng)
                print(f"| {form} | {n} | {rb[form][n].mean():.4f} | {rv[form][n].mean():.4f} | {m:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
        print(flush=True)


if __name__ == "__main__":
    main()
