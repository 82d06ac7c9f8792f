#!/usr/bin/env python3
"""Label-free study of lr_search's fusion and feedback settings (issue 17, docs/quality.md).

Reads the vectors `lr-eval --dump DIR` writes (documents' dense and SPLADE vectors, the fitted
query table and its idf weights, the sparse query weights, the fit's held-out pseudo-queries and,
where the collection has them, the judged queries) and ranks every candidate setting on:

- pseudo-queries of held-out documents (relevance = the source document, known-item MRR@10), in
  several forms: the fit's verbatim spans, spans with half their words dropped and the rest
  shuffled, short idf-drawn keyword queries, and spans with half their words replaced by their
  nearest neighbour in the fitted table (a paraphrase the sparse side cannot match verbatim);
- inverse-cloze pseudo-queries: a span cut out of a held-out document, whose only relevant
  text is the rest of that document (re-encoded by both document models without the span);
- title pseudo-queries, where documents have titles: a held-out document's title, whose only
  relevant text is the document without it (re-encoded likewise);
- the judged queries, nDCG@10 (record only: never used to choose).

Queries are encoded here exactly as the extension does (lookup = normalised idf-weighted sum of
table rows of the plain token ids, cut at 512; sparse = token counts times the corpus idf), and
checked against the lookup vectors lr-eval dumped for the judged queries.

usage: quality_study.py DUMP_DIR [DUMP_DIR ...] [--model-dir DIR] [--json OUT] [--systems A,B,...]"""
import argparse
import collections
import json
import math
import os
import random

import numpy as np
from tokenizers import Tokenizer

CANDIDATES = 1000
MAX_QUERY_TOKENS = 512


def read_f32(path, cols=None):
    a = np.fromfile(path, dtype="<f4")
    return a.reshape(-1, cols) if cols else a


def read_pairs(d, meta, form, dims, vocab):
    """One pseudo-query form of a dump: (pairs, rests' dense rows, rests' sparse rows, queries'
    full-model rows); empty when the dump has none."""
    pairs = [(p["doc"], p["query"]) for p in meta.get(form, [])]
    if not pairs:
        return [], None, None, None
    sparse = []
    for entries in meta[f"{form}_rest_sparse"]:
        row = np.zeros(vocab, dtype=np.float32)
        for t, w in entries:
            row[t] = w
        sparse.append(row)
    return (pairs, read_f32(os.path.join(d, f"{form}_rest_dense.f32"), dims), sparse,
            read_f32(os.path.join(d, f"{form}_full.f32"), dims))


def corpus_texts(dump_dir, corpus_jsonl):
    """The documents' texts (title and text, as lr-eval encodes them) in the dump's order."""
    by_id = {}
    for line in open(corpus_jsonl):
        d = json.loads(line)
        by_id[d["_id"]] = d.get("title", "") + " " + d.get("text", "")
    return [by_id[i] for i in json.load(open(os.path.join(dump_dir, "meta.json")))["doc_ids"]]


def load_tokenizer(model_dir):
    """The model's tokenizer as the lookup uses it: no padding, no truncation."""
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


class TableRows:
    """The fitted table of a corpus in float64, with its weights and unit rows: the base of the
    lookup variants the study scripts measure (self-weighting, expansion through the table)."""

    def __init__(self, c):
        self.c = c
        self.w = c.weights.astype(np.float64)
        self.rows = c.rows.astype(np.float64)
        self.unit = self.rows / np.maximum(np.linalg.norm(self.rows, axis=1, keepdims=True), 1e-12)


class Corpus:
    def __init__(self, d, tok):
        self.name = os.path.basename(os.path.normpath(d))
        meta = json.load(open(os.path.join(d, "meta.json")))
        self.dims = meta["dims"]
        self.doc_ids = meta["doc_ids"]
        n = len(self.doc_ids)
        self.docs = read_f32(os.path.join(d, "doc_dense.f32"), self.dims)
        self.rows = read_f32(os.path.join(d, "table_rows.f32"), self.dims)
        self.weights = read_f32(os.path.join(d, "table_weights.f32"))
        self.idf = read_f32(os.path.join(d, "sparse_idf.f32"))
        vocab = len(self.idf)
        self.sparse_docs = np.zeros((n, vocab), dtype=np.float32)
        for i, pairs in enumerate(meta["doc_sparse"]):
            for t, w in pairs:
                self.sparse_docs[i, t] = w
        self.held = [(src, text) for src, text in meta["held_out"]]
        self.queries = meta["queries"]
        self.qrels = meta["qrels"]
        self.tok = tok
        self.query_lookup = read_f32(os.path.join(d, "query_lookup.f32"), self.dims) if self.queries else None
        self.query_full = read_f32(os.path.join(d, "query_full.f32"), self.dims) if self.queries else None
        self.held_full = read_f32(os.path.join(d, "held_full.f32"), self.dims)
        # inverse-cloze and title pseudo-queries: (source document, query text), each with its
        # only relevant text (the document without the span / without its title) re-encoded by
        # both document models, and the query through the full model
        self.cloze, self.cloze_rest_dense, self.cloze_rest_sparse, self.cloze_full = read_pairs(d, meta, "cloze", self.dims, vocab)
        self.title, self.title_rest_dense, self.title_rest_sparse, self.title_full = read_pairs(d, meta, "title", self.dims, vocab)
        # document frequency over the corpus's plain ids, for keyword queries
        self.doc_texts = None

    def ids(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def relevance(self):
        """Per judged query, in order: its judgements by document index."""
        index = {d: i for i, d in enumerate(self.doc_ids)}
        return [{index[d]: g for d, g in self.qrels[qid].items() if d in index} for qid, _ in self.queries]

    def overrides(self, form):
        """Per pseudo-query of `form` (cloze, title): (source document, its rest's dense row, its
        rest's sparse row), the replacement `sides_of` scores for that query alone."""
        dense, sparse = getattr(self, f"{form}_rest_dense"), getattr(self, f"{form}_rest_sparse")
        return [(src, dense[i], sparse[i]) for i, (src, _) in enumerate(getattr(self, form))]

    def lookup(self, text):
        ids = self.ids(text)[:MAX_QUERY_TOKENS]
        v = np.zeros(self.dims, dtype=np.float64)
        for t in ids:
            v += self.weights[t] * self.rows[t]
        nrm = np.linalg.norm(v)
        return (v / nrm).astype(np.float32) if nrm > 0 else v.astype(np.float32)

    def sparse_query(self, text, weighted=True):
        q = {}
        for t in self.ids(text)[:MAX_QUERY_TOKENS]:
            q[t] = q.get(t, 0.0) + 1.0
        if weighted:
            q = {t: c * float(self.idf[t]) for t, c in q.items()}
        return q

    def sparse_scores(self, q):
        if not q:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        ids = np.fromiter(q.keys(), dtype=np.int64)
        w = np.fromiter(q.values(), dtype=np.float32)
        return self.sparse_docs[:, ids] @ w


# ---- candidate lists and fusion (as lr-search: ties by the lower document index) ----

def ranking(scores, valid=None, k=CANDIDATES):
    """Indices of the best `k` (optionally only where `valid`), best first, ties by index."""
    idx = np.arange(len(scores))
    if valid is not None:
        idx = idx[valid]
    order = np.lexsort((idx, -scores[idx]))
    return idx[order[:k]]


def side(scores, positive_only):
    """One side's candidates: (indices best first, their scores)."""
    valid = scores > 0 if positive_only else None
    r = ranking(scores, valid)
    return r, scores[r]


def normalised(cand, how, depth):
    ids, s = cand
    ids, s = ids[:depth], s[:depth]
    out = {}
    if len(ids) == 0:
        return out, 0.0
    if how == "minmax":
        lo, hi = s.min(), s.max()
        v = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
        missing = 0.0
    elif how == "z":
        mu, sd = s.mean(), s.std()
        if sd > 0:
            v = (s - mu) / sd
            missing = float(v.min())
        else:  # as lr-search: a lone or tied match still counts
            v, missing = np.zeros_like(s), -1.0
    elif how == "rrf":
        v = 1.0 / (60.0 + np.arange(1, len(s) + 1))
        missing = 0.0
    else:
        raise ValueError(how)
    return dict(zip(ids.tolist(), v.tolist())), missing


def phi(z):
    """Standard normal CDF (z-scores into (0, 1) for the interaction fusions)."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def fuse(dense, sparse, how, w, depth=CANDIDATES, k=1000, lam=0.0):
    """Weighted sum of the normalised sides. Interaction fusions (`how` = 'mmprod', 'zprod',
    'geo') add a cross term that rewards rows both sides rank high: with dense and sparse each a
    sum over query tokens, their product is a sum over token pairs, so the fused ranking is no
    longer term-independent (docs/quality.md, section 1)."""
    base = {"mmprod": "minmax", "geo": "minmax", "zprod": "z"}.get(how, how)
    nd, md = normalised(dense, base, depth)
    ns, ms = normalised(sparse, base, depth)
    ids = set(dense[0][:depth].tolist()) | set(sparse[0][:depth].tolist())
    if how == "mmprod":
        def f(d, s):
            return w * d + (1 - w) * s + lam * d * s
    elif how == "zprod":
        def f(d, s):
            return w * d + (1 - w) * s + lam * phi(d) * phi(s)
    elif how == "geo":
        def f(d, s):
            return w * math.log(d + lam) + (1 - w) * math.log(s + lam)
    else:
        def f(d, s):
            return w * d + (1 - w) * s
    scored = [(f(nd.get(i, md), ns.get(i, ms)), i) for i in ids]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [i for _, i in scored[:k]]


# ---- systems ----

def rocchio(docs, q, first, k, beta):
    """One Rocchio step of the query vector toward the mean of the top-`k` documents of
    `first` (a ranked list of indices), renormalised."""
    top = first[:k]
    if len(top) == 0:
        return q
    v = q + beta * docs[top].mean(axis=0)
    return v / np.linalg.norm(v)


def systems():
    out = [("dense", dict(kind="dense")), ("sparse idf", dict(kind="sparse"))]
    for w in (0.5, 0.6, 0.7, 0.8, 0.9):
        out.append((f"minmax w={w}", dict(kind="hybrid", how="minmax", w=w, depth=CANDIDATES)))
    for depth in (20, 50, 100, 200):
        out.append((f"minmax w=0.7 depth={depth}", dict(kind="hybrid", how="minmax", w=0.7, depth=depth)))
    for w in (0.5, 0.6, 0.7, 0.8, 0.9):
        out.append((f"z w={w}", dict(kind="hybrid", how="z", w=w, depth=CANDIDATES)))
    for w in (0.5, 0.6, 0.7):
        out.append((f"rrf w={w}", dict(kind="hybrid", how="rrf", w=w, depth=CANDIDATES)))
    for k in (3, 10):
        for beta in (0.5, 1.0, 2.0):
            out.append((f"dense+prf k={k} b={beta}", dict(kind="dense", prf=(k, beta))))
            out.append((f"minmax w=0.7+prf k={k} b={beta}", dict(kind="hybrid", how="minmax", w=0.7, depth=CANDIDATES, prf=(k, beta))))
            out.append((f"minmax w=0.7 depth=100+prf k={k} b={beta}", dict(kind="hybrid", how="minmax", w=0.7, depth=100, prf=(k, beta))))
            out.append((f"z w=0.7+prf k={k} b={beta}", dict(kind="hybrid", how="z", w=0.7, depth=CANDIDATES, prf=(k, beta))))
            out.append((f"rrf w=0.5+prf k={k} b={beta}", dict(kind="hybrid", how="rrf", w=0.5, depth=CANDIDATES, prf=(k, beta))))
    return out


def interaction_systems():
    """Fusions with a cross term (docs/quality.md, "Fusions that are not term-independent"):
    measured apart from systems(), so that the 49 settings the selection ranks stay as they were."""
    out = []
    for lam in (0.25, 0.5, 1.0, 2.0):
        out.append((f"mmprod w=0.7 l={lam}", dict(kind="hybrid", how="mmprod", w=0.7, depth=CANDIDATES, lam=lam)))
        out.append((f"zprod w=0.7 l={lam}", dict(kind="hybrid", how="zprod", w=0.7, depth=CANDIDATES, lam=lam)))
    for eps in (0.03, 0.1, 0.3, 1.0):
        out.append((f"geo w=0.7 e={eps}", dict(kind="hybrid", how="geo", w=0.7, depth=CANDIDATES, lam=eps)))
    return out


def gap_stats(sides):
    """Why fusion adds less to one dense side than another: how much the sides agree and how
    min-max spreads their scores. `sides` = per query (dense, sparse, docs)."""
    ov10, ov100, prof = [], [], {"dense": [], "sparse": []}
    for dense, sparse, _ in sides:
        d, s = dense[0], sparse[0]
        ov10.append(len(set(d[:10].tolist()) & set(s[:10].tolist())) / 10)
        ov100.append(len(set(d[:100].tolist()) & set(s[:100].tolist())) / 100)
        for name, (ids, sc) in (("dense", dense), ("sparse", sparse)):
            if len(sc) < 100:
                continue
            lo, hi = sc.min(), sc.max()
            prof[name].append([(sc[r] - lo) / (hi - lo) if hi > lo else 1.0 for r in (1, 9, 99)])
    out = {"overlap@10": float(np.mean(ov10)), "overlap@100": float(np.mean(ov100))}
    for name, rows in prof.items():
        if rows:
            m = np.mean(rows, axis=0)
            out[f"{name} min-max at ranks 2/10/100"] = [round(float(x), 3) for x in m]
    return out


def run_system(c, spec, qvec, sides, k=10):
    """Ranked document indices for one query: `qvec` the dense query vector, `sides` its
    (dense, sparse) candidate lists and document matrix (see `sides_of`)."""
    dense, sparse, docs = sides
    kind = spec["kind"]

    def rank(dense):
        if kind == "dense":
            return dense[0][:k].tolist()
        if kind == "sparse":
            return sparse[0][:k].tolist()
        return fuse(dense, sparse, spec["how"], spec["w"], spec["depth"], k, spec.get("lam", 0.0))

    first = rank(dense)
    if "prf" in spec:
        pk, beta = spec["prf"]
        q2 = rocchio(docs, qvec, np.array(first[:pk], dtype=np.int64), pk, beta)
        return rank(side(docs @ q2, False))
    return first


def sides_of(c, qvec, sparse_query, override=None):
    """Both sides' candidates for one query; `override` = (document, dense row, sparse row)
    replaces one document for this query alone (inverse cloze: the source without the span)."""
    docs = c.docs
    sparse_scores = c.sparse_scores(sparse_query)
    if override is not None:
        src, dense_row, sparse_row = override
        docs = docs.copy()
        docs[src] = dense_row
        sparse_scores[src] = sum(w * sparse_row[t] for t, w in sparse_query.items())
    return side(docs @ qvec, False), side(sparse_scores, True), docs


# ---- pseudo-query forms ----

STOP = set("a an and are as at be by for from has have in is it its of on or that the this to was were which with not but".split())


def variants(c, rng_seed=17):
    rng = random.Random(rng_seed)
    verbatim = c.held
    dropped, keywords, neighbours = [], [], []
    # idf of whole words (through the sparse weights of their first token)
    nbr_cache = {}
    rows_n = c.rows / np.maximum(np.linalg.norm(c.rows, axis=1, keepdims=True), 1e-9)
    vocab = c.tok.get_vocab()
    inv = {i: t for t, i in vocab.items()}
    word_ids = np.array([i for t, i in vocab.items() if t.isalpha() and not t.startswith("##") and len(t) > 2], dtype=np.int64)

    def neighbour(word):
        ids = c.ids(word)
        if len(ids) != 1 or word.lower() in STOP:
            return word
        t = ids[0]
        if t not in nbr_cache:
            sims = rows_n[word_ids] @ rows_n[t]
            best = word_ids[np.argsort(-sims)[:4]]
            best = [b for b in best if b != t and not inv[b].startswith(inv[t][:4]) and not inv[t].startswith(inv[b][:4])]
            nbr_cache[t] = inv[best[0]] if best else word
        return nbr_cache[t]

    for src, text in verbatim:
        words = text.split()
        kept = [w for w in words if rng.random() < 0.5] or words[:1]
        rng.shuffle(kept)
        dropped.append((src, " ".join(kept)))
        cand = sorted({w.strip(".,;:()[]{}\"'").lower() for w in words} - STOP)  # sorted: no hash order
        cand = [w for w in cand if len(w) > 2 and w.isalpha()]
        if cand:
            first_ids = [c.ids(w)[:1] for w in cand]
            wts = [float(c.idf[ids[0]]) if ids else 0.0 for ids in first_ids]
            n = min(len(cand), rng.randint(3, 6))
            chosen = []
            pool = list(zip(cand, wts))
            for _ in range(n):
                tot = sum(x[1] for x in pool)
                r = rng.random() * tot
                for j, (w, x) in enumerate(pool):
                    r -= x
                    if r <= 0:
                        chosen.append(w)
                        pool.pop(j)
                        break
            keywords.append((src, " ".join(chosen)))
        else:
            keywords.append((src, text))
        neighbours.append((src, " ".join(neighbour(w) if rng.random() < 0.5 else w for w in words)))
    return {"verbatim": verbatim, "dropped+shuffled": dropped, "keywords": keywords, "neighbours": neighbours}


def mrr10(ranked, src):
    for r, d in enumerate(ranked[:10]):
        if d == src:
            return 1.0 / (r + 1)
    return 0.0


def ndcg10(ranked, rel):
    dcg = sum(rel.get(d, 0.0) / math.log2(r + 2) for r, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def report_lookup(tag, c, lk):
    """One line for a variant of the lookup `lk` (text -> query vector): the fit's held-out
    verbatim spans (dense MRR@10), titles and inverse cloze (dense, z-score and min-max hybrids
    at w = 0.7, MRR@10) and the judged queries where there are any (nDCG@10, record only)."""
    specs = (("dense", dict(kind="dense")),
             ("z", dict(kind="hybrid", how="z", w=0.7, depth=CANDIDATES)),
             ("minmax", dict(kind="hybrid", how="minmax", w=0.7, depth=CANDIDATES)))
    held = np.stack([lk(t) for _, t in c.held])
    line = f"{tag}: held-out spans dense {np.mean([mrr10(ranking(c.docs @ q)[:10].tolist(), s) for q, (s, _) in zip(held, c.held)]):.4f}"
    for form in ("title", "cloze"):
        pairs = getattr(c, form)
        if not pairs:
            continue
        got = collections.defaultdict(list)
        for (src, text), override in zip(pairs, c.overrides(form)):
            q = lk(text)
            sides = sides_of(c, q, c.sparse_query(text), override)
            for name, spec in specs:
                got[name].append(mrr10(run_system(c, spec, q, sides), src))
        line += f" | {form} " + " ".join(f"{n} {np.mean(got[n]):.4f}" for n, _ in specs)
    if c.queries:
        got = collections.defaultdict(list)
        for (_, text), rel in zip(c.queries, c.relevance()):
            q = lk(text)
            sides = sides_of(c, q, c.sparse_query(text))
            for name, spec in specs:
                got[name].append(ndcg10(run_system(c, spec, q, sides), rel))
        line += " | judged " + " ".join(f"{n} {np.mean(got[n]):.4f}" for n, _ in specs)
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", metavar="DUMP_DIR")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--systems", help="a comma-separated subset of the settings, by name")
    ap.add_argument("--interaction", action="store_true", help="also the fusions with a cross term (interaction_systems)")
    a = ap.parse_args()
    out_json = a.json
    only = set(a.systems.split(",")) if a.systems else None
    tok = load_tokenizer(a.model_dir)
    specs = [s for s in systems() + (interaction_systems() if a.interaction else []) if only is None or s[0] in only]
    results = {}
    for d in a.dumps:
        c = Corpus(d, tok)
        print(f"\n## {c.name}: {len(c.doc_ids)} documents, {len(c.held)} held-out pseudo-queries, {len(c.queries)} judged queries", flush=True)
        if c.queries:
            mine = np.stack([c.lookup(t) for _, t in c.queries])
            err = np.abs(mine - c.query_lookup).max()
            print(f"lookup vectors here vs lr-eval's: max |diff| {err:.2e}")
            assert err < 1e-4, "the study's lookup differs from the extension's"
        sets = {name: qs for name, qs in variants(c).items()}
        if c.cloze:
            sets["cloze"] = c.cloze
        if c.title:
            sets["title"] = c.title
        res = {}
        for set_name, qs in sets.items():
            qv = [c.lookup(t) for _, t in qs]
            sq = [c.sparse_query(t) for _, t in qs]
            overrides = c.overrides(set_name) if set_name in ("cloze", "title") else [None] * len(qs)
            sides = [sides_of(c, q, s, o) for q, s, o in zip(qv, sq, overrides)]
            res.setdefault("GAP lookup", {})[set_name] = gap_stats(sides)
            for name, spec in specs:
                score = np.mean([mrr10(run_system(c, spec, q, sd), src) for q, sd, (src, _) in zip(qv, sides, qs)])
                res.setdefault(name, {})[set_name] = float(score)
            # full-query references on the verbatim spans (their full vectors were dumped)
            if set_name in ("verbatim", "cloze", "title"):
                fullv = {"verbatim": c.held_full, "cloze": c.cloze_full, "title": c.title_full}[set_name]
                sides = [sides_of(c, q, s, o) for q, s, o in zip(fullv, sq, overrides)]
                res.setdefault("GAP full", {})[set_name] = gap_stats(sides)
                for name, spec in specs:
                    score = np.mean([mrr10(run_system(c, spec, q, sd), src) for q, sd, (src, _) in zip(fullv, sides, qs)])
                    res.setdefault("FULL " + name, {})[set_name] = float(score)
            print(f"  {set_name} done", flush=True)
        if c.queries:
            rels = c.relevance()
            sq = [c.sparse_query(t) for _, t in c.queries]
            light = [sides_of(c, q, s) for q, s in zip(c.query_lookup, sq)]
            full = [sides_of(c, q, s) for q, s in zip(c.query_full, sq)]
            res.setdefault("GAP lookup", {})["judged"] = gap_stats(light)
            res.setdefault("GAP full", {})["judged"] = gap_stats(full)
            for name, spec in specs:
                res.setdefault(name, {})["judged"] = float(np.mean([ndcg10(run_system(c, spec, q, sd), r) for q, sd, r in zip(c.query_lookup, light, rels)]))
                res.setdefault("FULL " + name, {})["judged"] = float(np.mean([ndcg10(run_system(c, spec, q, sd), r) for q, sd, r in zip(c.query_full, full, rels)]))
        cols = list(sets) + (["judged"] if c.queries else [])
        print("| system | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for name in res:
            if name.startswith("GAP"):
                for col, st in res[name].items():
                    print(f"{name} {col}: {st}")
                continue
            print(f"| {name} | " + " | ".join(f"{res[name].get(col, float('nan')):.4f}" for col in cols) + " |")
        results[c.name] = res
    if out_json:
        json.dump(results, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main()
