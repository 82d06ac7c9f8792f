#!/usr/bin/env python3
"""Paired comparison of two of quality_study.py's settings on one pseudo-query form (or the
judged queries) of a dump: per-query differences, wins and losses, and a bootstrap 95 % interval
of the mean difference (docs/quality.md, "Title pseudo-queries"). Pseudo-queries are resampled
by source document (a document gives up to 4 cloze queries), judged queries one by one.

usage: quality_paired.py DUMP_DIR FORM SETTING_A SETTING_B [--model-dir DIR]
  FORM: cloze, title or judged; SETTING: a name from quality_study.systems(), e.g. "minmax w=0.7"."""
import os
import sys

import numpy as np

import quality_study as qs


def main():
    args = sys.argv[1:]
    model_dir = "/opt/lightretriever/models/all-minilm-l6-v2"
    if "--model-dir" in args:
        i = args.index("--model-dir")
        model_dir = args[i + 1]
        del args[i:i + 2]
    if len(args) != 4:
        sys.exit(__doc__)
    dump, form, a, b = args
    if form not in ("cloze", "title", "judged"):
        sys.exit(__doc__)
    tok = qs.load_tokenizer(model_dir)
    c = qs.Corpus(dump, tok)
    specs = dict(qs.systems())
    if form == "judged":
        index = {d: i for i, d in enumerate(c.doc_ids)}
        rels = [{index[d]: g for d, g in c.qrels[qid].items() if d in index} for qid, _ in c.queries]
        vectors = list(c.query_lookup)
        sides = [qs.sides_of(c, q, c.sparse_query(t)) for q, (_, t) in zip(vectors, c.queries)]
        score = lambda spec: np.array([qs.ndcg10(qs.run_system(c, spec, q, sd), r) for q, sd, r in zip(vectors, sides, rels)])
        groups = np.arange(len(rels))
    else:
        # quality_study.read_pairs: (pairs, rests' dense rows, rests' sparse rows, ...)
        queries, rest_dense, rest_sparse = getattr(c, form), getattr(c, f"{form}_rest_dense"), getattr(c, f"{form}_rest_sparse")
        if not queries:
            sys.exit(f"{dump} has no {form} pseudo-queries")
        vectors = [c.lookup(t) for _, t in queries]
        sides = [qs.sides_of(c, q, c.sparse_query(t), (src, rest_dense[i], rest_sparse[i])) for i, (q, (src, t)) in enumerate(zip(vectors, queries))]
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
