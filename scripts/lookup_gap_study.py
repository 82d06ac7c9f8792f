#!/usr/bin/env python3
"""Where the lookup's dense gap to the full-query encoder lies, on the judged queries of an
`lr-eval --dump` (docs/quality.md, "A third judged corpus: the Python FAQ"). Dense side alone,
nDCG@10 over every document:
  lookup           the fitted table, as the extension encodes (quality_study.Corpus.lookup)
  full             the full model's query vectors
  no question words  the lookup without the tokens in QUESTION_WORDS
  unweighted       the lookup with every token weight 1
  oracle           per query, the least-squares weights of its own distinct tokens' rows to the
                   full model's query vector (which no lookup has): the best any query-side
                   weighting of these rows could do
and the mean cosine of the lookup (and of the oracle) with the full model's query vector.

usage: lookup_gap_study.py DUMP_DIR... [--model-dir DIR]"""
import argparse

import numpy as np

import quality_study as qs

QUESTION_WORDS = set("how do does did i can what why is are was were the a an to of in on for my you your it its "
                     "this that with be when which where who there ? , . ' s t".split())


def study(dump, tok):
    c = qs.Corpus(dump, tok)
    rels = c.relevance()
    docs = c.docs.astype(np.float64)
    words = {v: k for k, v in tok.get_vocab().items()}

    def ndcg(v, i):
        return qs.ndcg10(list(np.argsort(-(docs @ v), kind="stable")[:10]), rels[i])

    def mean_of(ids, weighted=True):
        v = sum((c.weights[t] if weighted else 1.0) * c.rows[t].astype(np.float64) for t in ids)
        return v / np.linalg.norm(v)

    got = {k: [] for k in ("lookup", "full", "no question words", "unweighted", "oracle")}
    cos_lookup, cos_oracle = [], []
    for i, (_, text) in enumerate(c.queries):
        ids = c.ids(text)[:qs.MAX_QUERY_TOKENS]
        full = c.query_full[i].astype(np.float64)
        full /= np.linalg.norm(full)
        lookup = c.lookup(text).astype(np.float64)
        got["lookup"].append(ndcg(lookup, i))
        got["full"].append(ndcg(full, i))
        got["no question words"].append(ndcg(mean_of([t for t in ids if words[t] not in QUESTION_WORDS] or ids), i))
        got["unweighted"].append(ndcg(mean_of(ids, weighted=False), i))
        rows = c.rows[sorted(set(ids))].astype(np.float64)
        w, *_ = np.linalg.lstsq(rows.T, full, rcond=None)
        oracle = rows.T @ w
        oracle /= np.linalg.norm(oracle)
        got["oracle"].append(ndcg(oracle, i))
        cos_lookup.append(float(lookup @ full))
        cos_oracle.append(float(oracle @ full))
    print(f"## {c.name}: {len(c.queries)} judged queries, dense side alone, nDCG@10")
    for k, v in got.items():
        print(f"  {k}: {np.mean(v):.4f}")
    print(f"  cosine with the full query vector: lookup {np.mean(cos_lookup):.3f}, oracle {np.mean(cos_oracle):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", metavar="DUMP_DIR")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    args = ap.parse_args()
    tok = qs.load_tokenizer(args.model_dir)
    for d in args.dumps:
        study(d, tok)


if __name__ == "__main__":
    main()
