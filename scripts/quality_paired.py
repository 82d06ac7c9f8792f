#!/usr/bin/env python3
"""Paired comparison of two of quality_study.py's settings on one pseudo-query form (or the
judged queries) of a dump: per-query differences, wins and losses, and a bootstrap 95 % interval
of the mean difference (docs/quality.md, "Title pseudo-queries"). Pseudo-queries are resampled
by source document (a document gives up to 4 cloze queries), judged queries one by one.

usage: quality_paired.py DUMP_DIR FORM SETTING_A SETTING_B [--model-dir DIR]
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
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    args = ap.parse_args()
    dump, form, a, b = args.dump, args.form, args.a, args.b
    c = qs.Corpus(dump, qs.load_tokenizer(args.model_dir))
    specs = dict(qs.systems())
    if form == "judged":
        rels = c.relevance()
        vectors = list(c.query_lookup)
        sides = [qs.sides_of(c, q, c.sparse_query(t)) for q, (_, t) in zip(vectors, c.queries)]
        score = lambda spec: np.array([qs.ndcg10(qs.run_system(c, spec, q, sd), r) for q, sd, r in zip(vectors, sides, rels)])
        groups = np.arange(len(rels))
    else:
        queries = getattr(c, form)
        if not queries:
            sys.exit(f"{dump} has no {form} pseudo-queries")
        vectors = [c.lookup(t) for _, t in queries]
        sides = [qs.sides_of(c, q, c.sparse_query(t), o) for q, (_, t), o in zip(vectors, queries, c.overrides(form))]
        score = lambda spec: np.array([qs.mrr10(qs.run_system(c, spec, q, sd), src) for q, sd, (src, _) in zip(vectors, sides, queries)])
        groups = np.array([src for src, _ in queries])
    for name in (a, b):
        if name not in specs:
            sys.exit(f"unknown setting {name!r}; quality_study.systems() has: {', '.join(specs)}")
    diff = score(specs[a]) - score(specs[b])
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
