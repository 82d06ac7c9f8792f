#!/usr/bin/env python3
"""Paired comparison of two of quality_study.py's settings on one pseudo-query form (or the
judged queries) of a dump: per-query differences, wins and losses, and a bootstrap 95 % interval
of the mean difference (docs/quality.md, "Title pseudo-queries"). Pseudo-queries are resampled
by source document (a document gives up to 4 cloze queries), judged queries one by one.

usage: quality_paired.py DUMP_DIR FORM SETTING_A SETTING_B [--b-full] [--model-dir DIR]
  FORM: cloze, title or judged; SETTING: a name from quality_study.systems(), e.g. "minmax w=0.7"."""
import argparse
import sys

import numpy as np

import quality_study as qs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", metavar="DUMP_DIR")
    ap.add_argument("form", choices=("cloze", "title", "judged"))
    ap.add_argument("a", metavar="SETTING_A")
    ap.add_argument("b", metavar="SETTING_B")
    ap.add_argument("--b-full", action="store_true",
                    help="run SETTING_B on the full-query encoder's vectors instead of the lookup's")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    args = ap.parse_args()
    dump, form, a, b = args.dump, args.form, args.a, args.b
    c = qs.Corpus(dump, qs.load_tokenizer(args.model_dir))
    specs = dict(qs.systems() + qs.interaction_systems())
    if form == "judged":
        rels = c.relevance()
        lookups, fulls = list(c.query_lookup), list(c.query_full)
        texts, overrides = [t for _, t in c.queries], [None] * len(rels)
        measure = lambda ranked, i: qs.ndcg10(ranked, rels[i])
        groups = np.arange(len(rels))
    else:
        queries = getattr(c, form)
        if not queries:
            sys.exit(f"{dump} has no {form} pseudo-queries")
        lookups, fulls = [c.lookup(t) for _, t in queries], list(getattr(c, f"{form}_full"))
        texts, overrides = [t for _, t in queries], c.overrides(form)
        measure = lambda ranked, i: qs.mrr10(ranked, queries[i][0])
        groups = np.array([src for src, _ in queries])

    def score(spec, vectors):
        sides = [qs.sides_of(c, q, c.sparse_query(t), o) for q, t, o in zip(vectors, texts, overrides)]
        return np.array([measure(qs.run_system(c, spec, q, sd), i) for i, (q, sd) in enumerate(zip(vectors, sides))])
    for name in (a, b):
        if name not in specs:
            sys.exit(f"unknown setting {name!r}; quality_study.systems() has: {', '.join(specs)}")
    diff = score(specs[a], lookups) - score(specs[b], fulls if args.b_full else lookups)
    if args.b_full:
        b = f"{b}, full-query encoder"
    # Resample whole groups (source documents): queries of one document are not independent.
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(10000):
        picked = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        boot.append(diff[picked].mean())
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(f"{c.name}, {form} ({len(diff)} queries): '{a}' − '{b}' = {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] (95 %, paired bootstrap over {len(members)} groups); "
          f"{a} ahead on {(diff > 0).sum()}, behind on {(diff < 0).sum()}, tied on {(diff == 0).sum()}")


if __name__ == "__main__":
    main()
