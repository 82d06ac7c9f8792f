#!/usr/bin/env python3
"""Query expansion through the fitted table (issue 17, docs/quality.md "Expansion through the
table"): measured, not kept.

A lookup query q0 = normalise(Σ w_t R_t) is moved towards the vocabulary rows nearest to it,
excluding its own tokens, with no model and no document at query time:

    q = normalise( q0 + α · normalise( Σ_{v in top k} exp((cos_v − max cos) / τ) R̂_v ) )

R̂ the unit rows, cos_v = R̂_v · q0. Which rows are nearest depends on every query token, so
tokens interact (the lookup hybrid is no longer term-independent); a 30k × D product per query.
α = 0 is today's lookup. Reported per setting: every pseudo-query form of the dump and the judged
queries where there are any (quality_study.report_lookup).

usage: vocab_expansion_study.py DUMP [DUMP...] [--settings K:ALPHA:TAU,...]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_study as qs  # noqa: E402

# BERT WordPiece vocabularies put [PAD], [unused*], [CLS], [SEP], [MASK] below this id.
FIRST_WORD_ID = 999


class VocabExpanded(qs.TableRows):
    def __init__(self, c, k, alpha, tau):
        super().__init__(c)
        self.k, self.alpha, self.tau = k, alpha, tau

    def __call__(self, text):
        ids = self.c.ids(text)[:qs.MAX_QUERY_TOKENS]
        if not ids:
            return np.zeros(self.c.dims, dtype=np.float32)
        q = (self.w[ids, None] * self.rows[ids]).sum(0)
        q /= np.linalg.norm(q)
        if self.alpha:
            cos = self.unit @ q
            cos[ids] = -np.inf
            cos[:FIRST_WORD_ID] = -np.inf
            top = np.argpartition(-cos, self.k)[:self.k]
            a = np.exp((cos[top] - cos[top].max()) / self.tau)
            e = (a[:, None] * self.unit[top]).sum(0)
            q = q + self.alpha * e / np.linalg.norm(e)
        return (q / np.linalg.norm(q)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", metavar="DUMP")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--settings", default="0:0:1,10:0.1:0.05,10:0.25:0.05,10:0.5:0.05,50:0.25:0.05,10:0.25:1")
    a = ap.parse_args()
    tok = qs.load_tokenizer(a.model_dir)
    settings = [(int(k), float(alpha), float(tau)) for k, alpha, tau in (s.split(":") for s in a.settings.split(","))]
    for dump in a.dumps:
        c = qs.Corpus(dump, tok)
        print(f"## {c.name}")
        for k, alpha, tau in settings:
            qs.report_lookup(f"k {k} alpha {alpha} tau {tau}", c, VocabExpanded(c, k, alpha, tau))


if __name__ == "__main__":
    main()
