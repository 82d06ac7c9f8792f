#!/usr/bin/env python3
"""How lr_search's default ranking depends on `candidates`, the depth each side (dense, sparse)
contributes before fusion (issue 17).

For depths 100, 200, 300, 500, 1000 per side: the default (z-score fusion at w = 0.7, each
side z-scored over its own depth-long list, then candidate_graph_study's smoothing "A M=50 k=10
a=0.5"), for the lookup and the full-query hybrid. Per dump: judged nDCG@10, title / cloze /
verbatim MRR@10, the unsmoothed fusion beside it, the top 10's overlap with depth 1000's, and a
paired bootstrap (candidate_graph_study.boot) of each depth against 1000; as diagnostics, the
lookup's default with each depth's candidates but depth 1000's z statistics, and how the depth
moves the sides' relative weight (sd_dense / sd_sparse). A depth's lists are the
first `depth` of quality_study's 1,000-long sides (the same as asking for `depth`); the judged
queries' rankings are checked against candidate_graph_study.rerank at every depth.

usage: candidate_depth_study.py DUMP_DIR [DUMP_DIR ...] [--model-dir DIR] [--boot N]"""
import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import candidate_graph_study as cgs  # noqa: E402
import quality_study as qs  # noqa: E402

DEPTHS = (100, 200, 300, 500, 1000)
DEFAULT = "A M=50 k=10 a=0.5"
M, K, ALPHA = 50, 10, 0.5
FORMS = cgs.FORMS
ENCODERS = ("lookup", "full")
CHECKS = collections.Counter()
SCALE = collections.defaultdict(lambda: collections.defaultdict(list))


def cut(sides, depth):
    """The sides as `depth` candidates each would give them."""
    (di, ds), (si, ss), docs = sides
    return (di[:depth], ds[:depth]), (si[:depth], ss[:depth]), docs


def zmap(cand, stats=None):
    """A side's z-scores and missing value, as qs.normalised; `stats` = (mean, sd) taken from
    elsewhere (the 1,000-long list) instead of from `cand` itself."""
    if stats is None or stats[1] <= 0:
        return qs.normalised(cand, "z", len(cand[0]))
    v = (cand[1].astype(np.float64) - stats[0]) / stats[1]
    return dict(zip(cand[0].tolist(), v.tolist())), float(v.min()) if len(v) else 0.0


def stats_of(cand):
    s = cand[1].astype(np.float64)
    return (s.mean(), s.std()) if len(s) else (0.0, 0.0)


def default_top10(sides, stats=(None, None)):
    """(fused top 10, smoothed top 10): candidate_graph_study.rerank's "no rule" and rule A at
    M = 50, k = 10, α = 0.5, computed the same way (gram over the fused top max(cgs.MS), sliced).
    `stats`: each side's (mean, sd) from elsewhere, for the diagnostic "1000's statistics"."""
    dense, sparse, docs = sides
    zd, md = zmap(dense, stats[0])
    zs, ms = zmap(sparse, stats[1])
    pool = np.array(sorted(set(dense[0].tolist()) | set(sparse[0].tolist())), dtype=np.int64)
    f = np.array([cgs.W * zd.get(i, md) + (1 - cgs.W) * zs.get(i, ms) for i in pool.tolist()])
    o = cgs.order(f, pool)[:max(cgs.MS)]
    top, f = pool[o], f[o]
    vecs = docs[top].astype(np.float64)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    gram = unit @ unit.T
    ids, fm, sim = top[:M], f[:M], gram[:M, :M].copy()
    np.fill_diagonal(sim, -np.inf)
    nb = np.argpartition(-sim, K - 1, axis=1)[:, :K]
    wts = np.zeros((len(ids), len(ids)))
    np.put_along_axis(wts, nb, np.maximum(np.take_along_axis(sim, nb, 1), 0.0), 1)
    tot = wts.sum(1, keepdims=True)
    wts = np.divide(wts, tot, out=np.zeros_like(wts), where=tot > 0)
    fz = (fm - fm.mean()) / fm.std() if fm.std() > 0 else np.zeros(len(ids))
    return top[:10].tolist(), ids[cgs.order(fz + ALPHA * (wts @ fz), ids)[:10]].tolist()


def run_corpus(c):
    """res[(encoder, rule, depth)][form] = per-query values; top[(encoder, rule, depth)][form] =
    per-query top 10s (rule: "smoothed", the default, or "fused", without smoothing)."""
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    top = collections.defaultdict(lambda: collections.defaultdict(list))
    forms = {"judged": c.queries, "title": c.title, "cloze": c.cloze, "verbatim": c.held}
    fulls = {"judged": c.query_full, "title": c.title_full, "cloze": c.cloze_full, "verbatim": c.held_full}
    rels = c.relevance() if c.queries else None
    for form, pairs in forms.items():
        if not pairs:
            continue
        overrides = c.overrides(form) if form in ("title", "cloze") else [None] * len(pairs)
        for i, ((src, text), o) in enumerate(zip(pairs, overrides)):
            measure = (lambda r: qs.ndcg10(r, rels[i])) if form == "judged" else (lambda r: qs.mrr10(r, src))
            sq = c.sparse_query(text)
            lk = c.lookup(text)
            toks = cgs.tokens(c, text) if form == "judged" else None
            lk_sides = qs.sides_of(c, lk, sq, o)
            for enc, q in (("lookup", lk), ("full", fulls[form][i])):
                full_sides = lk_sides if enc == "lookup" else qs.sides_of(c, q, sq, o)
                ref_stats = (stats_of(full_sides[0]), stats_of(full_sides[1]))
                for depth in DEPTHS:
                    sides = cut(full_sides, depth)
                    fused, smoothed = default_top10(sides)
                    (_, sd_d), (_, sd_s) = stats_of(sides[0]), stats_of(sides[1])
                    if sd_s > 0 and ref_stats[1][1] > 0:  # the sparse side's weight in raw units, relative to 1000's
                        SCALE[(enc, depth)][form].append(np.log((sd_d / sd_s) / (ref_stats[0][1] / ref_stats[1][1])))
                    if enc == "lookup":  # depth's candidates, 1000's z statistics
                        _, kept = default_top10(sides, ref_stats)
                        res[(enc, "smoothed, 1000's statistics", depth)][form].append(measure(kept))
                    if form == "judged":  # the same rankings as candidate_graph_study's own code
                        out = {}
                        cgs.rerank(c, q, toks, sides, cut(lk_sides, depth)[0], out)
                        CHECKS["judged: top 10s = candidate_graph_study.rerank's"] += (out["no rule"] == fused) + (out[DEFAULT] == smoothed)
                        CHECKS["judged: top 10s compared"] += 2
                    for rule, ranked in (("fused", fused), ("smoothed", smoothed)):
                        res[(enc, rule, depth)][form].append(measure(ranked))
                        top[(enc, rule, depth)][form].append(ranked)
        print(f"  {form}: {len(pairs)} queries", flush=True)
    return res, top


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", metavar="DUMP_DIR")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--boot", type=int, default=10000)
    a = ap.parse_args()
    tok = qs.load_tokenizer(a.model_dir)
    for d in a.dumps:
        c = qs.Corpus(d, tok)
        print(f"\n## {c.name}: {len(c.doc_ids)} documents; judged {len(c.queries)}, titles {len(c.title)}, "
              f"cloze {len(c.cloze)}, held-out spans {len(c.held)}", flush=True)
        CHECKS.clear()
        SCALE.clear()
        res, top = run_corpus(c)
        forms = [f for f in FORMS if res[("lookup", "smoothed", 1000)].get(f)]
        print("checks: " + "; ".join(f"{k} {v}" for k, v in CHECKS.items()))
        for enc in ENCODERS:
            name = "lookup hybrid" if enc == "lookup" else "full-query hybrid"
            print(f"\n### {c.name}, {name}: default (z-score w=0.7 + {DEFAULT}), and z-score alone; "
                  f"judged nDCG@10, the rest MRR@10; overlap = |top 10 ∩ depth 1000's top 10| / 10, mean, "
                  f"and the share of queries with the same top 10 in the same order")
            print("| candidates | " + " | ".join(forms) + " | z-score alone: " + " / ".join(forms)
                  + " | overlap@10 with 1000: " + " / ".join(forms) + " | same top 10: " + " / ".join(forms) + " |")
            print("|---:|" + "---:|" * len(forms) + "---|---|---|")
            for depth in DEPTHS:
                sm, fu = res[(enc, "smoothed", depth)], res[(enc, "fused", depth)]
                ref = top[(enc, "smoothed", 1000)]
                here = top[(enc, "smoothed", depth)]
                ov = [np.mean([len(set(x) & set(y)) / 10 for x, y in zip(here[f], ref[f])]) for f in forms]
                same = [np.mean([x == y for x, y in zip(here[f], ref[f])]) for f in forms]
                print(f"| {depth} | " + " | ".join(f"{np.mean(sm[f]):.4f}" for f in forms)
                      + " | " + " / ".join(f"{np.mean(fu[f]):.4f}" for f in forms)
                      + " | " + " / ".join(f"{x:.3f}" for x in ov)
                      + " | " + " / ".join(f"{x:.3f}" for x in same) + " |")
        print(f"\n### {c.name}, lookup hybrid, diagnostics: (a) the default with each depth's candidates but the "
              f"z statistics (mean, sd) of the 1,000-long lists, so that only which documents can appear changes; "
              f"(b) the sparse side's weight in raw score units, 0.3/0.7 · sd_dense / sd_sparse, relative to depth "
              f"1000's, geometric mean over queries (< 1: the sparse side counts less than at 1000)")
        print("| candidates | (a) " + " / ".join(forms) + " | (b) lookup: " + " / ".join(forms) + " | (b) full-query: " + " / ".join(forms) + " |")
        print("|---:|---|---|---|")
        for depth in DEPTHS:
            kept = res[("lookup", "smoothed, 1000's statistics", depth)]
            print(f"| {depth} | " + " / ".join(f"{np.mean(kept[f]):.4f}" for f in forms) + " | "
                  + " | ".join(" / ".join(f"{np.exp(np.mean(SCALE[(enc, depth)][f])):.3f}" for f in forms) for enc in ENCODERS) + " |")
        print(f"\n### {c.name}: paired bootstrap of the default at each depth − at 1000 "
              f"(queries resampled one by one, 95 %, {a.boot} resamples)")
        for enc in ENCODERS:
            for f in forms:
                ref = np.array(res[(enc, "smoothed", 1000)][f])
                for depth in DEPTHS[:-1]:
                    diff = np.array(res[(enc, "smoothed", depth)][f]) - ref
                    print(f"{c.name}, {enc}, {f}: {depth} − 1000: {cgs.boot(diff, a.boot)}", flush=True)


if __name__ == "__main__":
    main()
