#!/usr/bin/env python3
"""Two query-time rules over the fused top M that are not term-independent and need no model at
query time (issue 17, docs/quality.md "Fusion and feedback, chosen label-free" and after).

Both start from today's ranking, `lr_search`'s default: z-score fusion at w = 0.7 of the dense
side and the idf·count sparse side (quality_study's "z w=0.7"), and rerank its top M; the rest
stays below.

A. Score smoothing over the candidates' own graph (Diaz 2005, score regularisation; MacAvaney et
   al. 2022, corpus graph). With f the fused scores of the top M, z-scored over the M
   ((f − mean) / sd), and sim the cosine between two candidates' stored dense vectors (the full
   model's document vectors, a table column):
       g(d) = f(d) + α · Σ_{d' in the k nearest of d among the M} sim(d,d') f(d') / Σ sim(d,d')
   (similarities below 0 count as 0). The neighbour weights sum to 1, so any increasing affine
   normalisation of f (min-max over the M too) gives the same ranking: the script checks that
   min-max's top 10 equals z's and prints the count. Cost: a fetch of M stored vectors and an
   M×M×D product.
B. Coverage rescoring, a soft AND over the query's tokens. With R̂_t the unit row of query token
   t and π_t its share of the lookup, π_t ∝ w_t c_t ‖R_t‖ (idf weight, count, row length: the
   lookup is Σ_t π_t R̂_t, normalised), the dense side of each top-M document becomes
       s(d) = −(1/β) log Σ_t π_t exp(−β R̂_t · d)
   which at β → 0 is Σ_t π_t R̂_t · d, today's dense score times a per-query constant κ. s / κ
   is z-scored with the dense side's own constants (its 1,000 candidates, as today) and fused
   again with the sparse side at w = 0.7 ("global"; at β = 0 this is today's ranking exactly),
   or both sides are z-scored over the M alone ("topM"). Cost: a fetch of M stored vectors and
   a T×M×D product (T distinct query tokens).

The full-query encoder's hybrid (same sparse side) gets rule A unchanged. Rule B has no
per-token parts for it: there it reranks the full hybrid's top M with the lookup's soft-min and
the lookup's dense constants, so at β = 0 it is the lookup hybrid over the full hybrid's top M.

Forms: the judged queries (nDCG@10, record only), the fit's title and inverse-cloze pseudo-queries
and its held-out verbatim spans (MRR@10). Label-free choice: titles, cloze a second opinion.

usage: candidate_graph_study.py DUMP_DIR [DUMP_DIR ...] [--model-dir DIR] [--boot N] [--also SETTING ...]
  (--also: more settings for the paired bootstrap, beside the titles' best of each rule)"""
import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_study as qs  # noqa: E402

W = 0.7
MS = (20, 50, 100)
KS = (3, 5, 10)
ALPHAS = (0.25, 0.5, 1.0)
BETAS = (0, 2, 5, 10, 20)
Z = dict(kind="hybrid", how="z", w=W, depth=qs.CANDIDATES)
PRF = dict(Z, prf=(3, 0.5))
FORMS = ("judged", "title", "cloze", "verbatim")


def settings():
    out = ["no rule", "feedback 3 rows 0.5"]
    out += [f"A M={m} k={k} a={a}" for m in MS for k in KS for a in ALPHAS]
    out += [f"B {n} M={m} b={b}" for n in ("global", "topM") for m in MS for b in BETAS]
    return out


def z_of(cand):
    """A side's z-score constants over its candidates, and its z-scores (as qs.normalised)."""
    s = cand[1].astype(np.float64)
    z, missing = qs.normalised(cand, "z", qs.CANDIDATES)
    return s.mean(), s.std(), z, missing


def tokens(c, text):
    """Distinct query ids, their unit rows and shares π_t of the lookup (w_t c_t ‖R_t‖, summing
    to 1), and κ: the weighted mean affinity Σ π_t R̂_t·d is κ times the lookup's q·d."""
    cnt = collections.Counter(c.ids(text)[:qs.MAX_QUERY_TOKENS])
    ids = np.array(sorted(cnt), dtype=np.int64)
    rows = c.rows[ids].astype(np.float64)
    norm = np.linalg.norm(rows, axis=1)
    share = c.weights[ids].astype(np.float64) * np.array([cnt[t] for t in ids.tolist()]) * norm
    keep = share > 0
    v = (share[keep, None] * (rows[keep] / norm[keep, None])).sum(0)
    return rows[keep] / norm[keep, None], share[keep] / share[keep].sum(), np.linalg.norm(v) / share[keep].sum()


def softmin(aff, pi, beta):
    """−(1/β) log Σ_t π_t exp(−β a_t) over the columns of aff (T×M); β = 0: the weighted mean."""
    if beta == 0:
        return pi @ aff
    x = -beta * aff
    mx = x.max(0)
    return -(mx + np.log(pi @ np.exp(x - mx))) / beta


def order(scores, ids):
    """Indices into ids, best first, ties by the lower document index (as lr-search)."""
    return np.lexsort((ids, -scores))


CHECKS = collections.Counter()
TOKENS = collections.defaultdict(list)  # distinct query tokens per query, by form (rule B's T)


def rerank(c, q, lk_tokens, sides, lk_dense, out):
    """Every setting's top 10 for one query: `q` its dense query vector, `sides` its (dense,
    sparse, docs) candidates, `lk_tokens` the lookup's tokens() and `lk_dense` the lookup's dense
    candidates (rule B scores the lookup's tokens whatever the first ranking)."""
    dense, sparse, docs = sides
    mu_d, sd_d, zd, md = z_of(dense)
    _, _, zs, ms = z_of(sparse)
    pool = np.array(sorted(set(dense[0].tolist()) | set(sparse[0].tolist())), dtype=np.int64)
    f = np.array([W * zd.get(i, md) + (1 - W) * zs.get(i, ms) for i in pool.tolist()])
    o = order(f, pool)[:max(MS)]
    top, f = pool[o], f[o]
    first = qs.run_system(c, Z, q, sides)
    assert first == top[:10].tolist(), "fused scores differ from quality_study.fuse"
    out["no rule"] = first
    out["feedback 3 rows 0.5"] = qs.run_system(c, PRF, q, sides)
    vecs = docs[top].astype(np.float64)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    gram = unit @ unit.T
    for m in MS:
        ids, fm, sim = top[:m], f[:m], gram[:m, :m].copy()
        np.fill_diagonal(sim, -np.inf)
        for k in KS:
            nb = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            wts = np.zeros((m, m))
            np.put_along_axis(wts, nb, np.maximum(np.take_along_axis(sim, nb, 1), 0.0), 1)
            tot = wts.sum(1, keepdims=True)
            wts = np.divide(wts, tot, out=np.zeros_like(wts), where=tot > 0)
            fz = (fm - fm.mean()) / fm.std() if fm.std() > 0 else np.zeros(m)
            fmm = (fm - fm.min()) / (fm.max() - fm.min()) if fm.max() > fm.min() else np.zeros(m)
            for a in ALPHAS:
                out[f"A M={m} k={k} a={a}"] = ids[order(fz + a * (wts @ fz), ids)[:10]].tolist()
                CHECKS["A: min-max's top 10 = z's"] += out[f"A M={m} k={k} a={a}"] == ids[order(fmm + a * (wts @ fmm), ids)[:10]].tolist()
                CHECKS["A: rankings"] += 1
    # rule B: the lookup's tokens against the candidates' vectors, with the lookup's dense constants
    rows, pi, kappa = lk_tokens
    lmu, lsd, _, _ = z_of(lk_dense)
    aff = rows @ vecs.T
    sp_map = dict(zip(sparse[0].tolist(), sparse[1].tolist()))
    sp = np.array([sp_map.get(i, 0.0) for i in top.tolist()])
    for m in MS:
        ids = top[:m]
        for b in BETAS:
            s = softmin(aff[:, :m], pi, b) / kappa
            g = W * (s - lmu) / lsd + (1 - W) * np.array([zs.get(i, ms) for i in ids.tolist()])
            out[f"B global M={m} b={b}"] = ids[order(g, ids)[:10]].tolist()
            if b == 0 and dense is lk_dense:
                CHECKS["B global, b = 0, lookup: top 10 = no rule's"] += out[f"B global M={m} b={b}"] == first
                CHECKS["B global, b = 0, lookup: queries × M"] += 1
            spm = sp[:m]
            zsm = (spm - spm.mean()) / spm.std() if spm.std() > 0 else np.zeros(m)
            g = W * (s - s.mean()) / s.std() + (1 - W) * zsm
            out[f"B topM M={m} b={b}"] = ids[order(g, ids)[:10]].tolist()


def run_corpus(c, results):
    """results[(encoder, setting)][form] = per-query values."""
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
            lk_sides = qs.sides_of(c, lk, sq, o)
            toks = tokens(c, text)
            TOKENS[form].append(len(toks[1]))
            for enc, q, sides in (("lookup", lk, lk_sides), ("full", fulls[form][i], None)):
                sides = sides or qs.sides_of(c, q, sq, o)
                out = {}
                rerank(c, q, toks, sides, lk_sides[0], out)
                for name, ranked in out.items():
                    results[(enc, name)][form].append(measure(ranked))
        print(f"  {form}: {len(pairs)} queries", flush=True)


def mean(results, key, form):
    v = results[key].get(form)
    return float(np.mean(v)) if v else float("nan")


def boot(diff, b, seed=0):
    """quality_paired.py's interval: resample queries (judged: one by one), 95 %."""
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(b)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return f"{diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}], ahead on {(diff > 0).sum()}, behind on {(diff < 0).sum()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", metavar="DUMP_DIR")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--also", action="append", default=[], metavar="SETTING")
    a = ap.parse_args()
    tok = qs.load_tokenizer(a.model_dir)
    names = settings()
    per = {}
    for d in a.dumps:
        c = qs.Corpus(d, tok)
        print(f"\n## {c.name}: {len(c.doc_ids)} documents; judged {len(c.queries)}, titles {len(c.title)}, "
              f"cloze {len(c.cloze)}, held-out spans {len(c.held)}", flush=True)
        res = collections.defaultdict(lambda: collections.defaultdict(list))
        TOKENS.clear()
        run_corpus(c, res)
        print("distinct query tokens T (rule B's T×M×D product), mean / max: "
              + ", ".join(f"{f} {np.mean(v):.1f} / {max(v)}" for f, v in TOKENS.items()))
        per[c.name] = res
        print(f"\n| setting | lookup: {' / '.join(FORMS)} | full-query: {' / '.join(FORMS)} |\n|---|---|---|")
        for name in names:
            cells = [" / ".join(f"{mean(res, (enc, name), f):.4f}" for f in FORMS) for enc in ("lookup", "full")]
            print(f"| {name} | {cells[0]} | {cells[1]} |")
    # label-free choice: geometric mean over the corpora of the lookup hybrid's ratio to no rule
    corpora = list(per)

    def ratio(name, form, enc="lookup"):
        r = [mean(per[k], (enc, name), form) / mean(per[k], (enc, "no rule"), form) for k in corpora]
        return float(np.exp(np.mean(np.log(r))))

    def cells(name, enc, forms):
        return " | ".join(" / ".join(f"{mean(per[k], (enc, name), f):.4f}" for k in corpora) for f in forms)
    print(f"\n## label-free choice: the lookup hybrid's titles MRR@10, geometric mean over {', '.join(corpora)} "
          "of the ratio to no rule's; cloze a second opinion; judged a record (values per corpus)")
    print("| setting | titles ratio | cloze ratio | lookup: titles | cloze | judged | full-query + rule: titles | judged |")
    print("|---|---:|---:|---|---|---|---|---|")
    ranked = sorted(names, key=lambda n: -ratio(n, "title"))
    for name in ranked[:12] + [n for n in ("no rule", "feedback 3 rows 0.5") if n not in ranked[:12]]:
        print(f"| {name} | {ratio(name, 'title'):.4f} | {ratio(name, 'cloze'):.4f} | "
              f"{cells(name, 'lookup', ('title', 'cloze', 'judged'))} | {cells(name, 'full', ('title', 'judged'))} |")
    best_a = next(n for n in ranked if n.startswith("A"))
    best_b = next(n for n in ranked if n.startswith("B") and not n.endswith(" b=0"))  # b = 0: no change
    by_cloze = sorted(names, key=lambda n: -ratio(n, "cloze"))[:3]
    print(f"\ntitles pick: {ranked[0]}; best of rule A: {best_a}; best of rule B: {best_b}; "
          f"cloze's top 3: " + ", ".join(f"{n} ({ratio(n, 'cloze'):.4f})" for n in by_cloze))
    print("checks: " + "; ".join(f"{k} {v}" for k, v in CHECKS.items()))
    print("\n## paired bootstrap (queries resampled, 95 %): judged nDCG@10, titles MRR@10 (one title per document)")
    for form in ("judged", "title"):
        for k in corpora:
            res = per[k]
            full = np.array(res[("full", "no rule")][form])
            if not len(full):
                continue
            for name in (best_a, best_b, *a.also, "no rule", "feedback 3 rows 0.5"):
                lk = np.array(res[("lookup", name)][form])
                print(f"{k}, {form}: lookup + {name} − full-query hybrid: {boot(lk - full, a.boot)}")
            for name in (best_a, best_b, *a.also):
                lk = np.array(res[("lookup", name)][form])
                print(f"{k}, {form}: lookup + {name} − full-query hybrid + {name}: {boot(lk - np.array(res[('full', name)][form]), a.boot)}")
                print(f"{k}, {form}: lookup + {name} − lookup hybrid: {boot(lk - np.array(res[('lookup', 'no rule')][form]), a.boot)}")
                fr = np.array(res[("full", name)][form])
                print(f"{k}, {form}: full + {name} − full-query hybrid: {boot(fr - full, a.boot)}")

if __name__ == "__main__":
    main()
