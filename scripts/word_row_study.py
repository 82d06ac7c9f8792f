#!/usr/bin/env python3
"""Whole-word rows for words the tokenizer splits (issue 17, docs/quality.md "Whole-word rows").

The lookup and the sparse side both see word pieces: "polarography" is `polar ##ography`, two
context-free rows, and the sparse side matches the same two pieces. The full encoder reads the
pieces of a word together. So where the query's words are split, the lookup fails where the
sparse side fails, and fusion gains little. A whole-word row is still a lookup, with no model at
query time: each word of the corpus that the tokenizer splits gets a row, built once when the
table is fitted, from the full model's vector of the word alone (`[CLS] pieces [SEP]`, as an
untrained row is `[CLS] id [SEP]`), mapped into the fitted space by the linear map the fit
uses for unseen rows (here: least squares from the untrained rows to the fitted rows over the
ids of the corpus). A query word found in that dictionary contributes, with its pieces' summed
weight W = Σ w_i,

    blend γ:     (1 − γ) Σ_i w_i R_i + γ W · M e_word
    residual γ:  Σ_i w_i R_i + γ W · (M e_word − mean_i M U_i)

(γ = 0 is today's lookup). The sparse side is unchanged.

usage: word_row_study.py DUMP CORPUS.jsonl CACHE_DIR --write-words WORDS.txt
       (then: lr-eval's example encode_lines MODEL_DIR WORDS.txt WORDS.f32)
       word_row_study.py DUMP CORPUS.jsonl CACHE_DIR --words WORDS.txt [--gammas ...]"""
import argparse
import collections
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality_study as qs  # noqa: E402


def words_of(tok, text):
    """(word, its piece ids) for each word of `text` as the tokenizer splits it, in order."""
    enc = tok.encode(text, add_special_tokens=False)
    groups = collections.OrderedDict()
    for i, (t, w) in enumerate(zip(enc.ids, enc.word_ids)):
        groups.setdefault(w, []).append(i)
    out = []
    for positions in groups.values():
        start, end = enc.offsets[positions[0]][0], enc.offsets[positions[-1]][1]
        out.append((text[start:end].lower(), [enc.ids[p] for p in positions]))
    return out


def split_words(c, tok, texts, min_df):
    df = collections.Counter()
    for text in texts:
        df.update({w for w, ids in words_of(tok, text) if len(ids) > 1})
    return sorted(w for w, n in df.items() if n >= min_df)


class WordRows(qs.TableRows):
    def __init__(self, c, tok, words, word_vectors, untrained, used, how, gamma):
        super().__init__(c)
        self.tok, self.how, self.gamma = tok, how, gamma
        # M: untrained rows -> fitted rows, least squares over the ids the corpus uses.
        u = untrained.astype(np.float64)
        m, *_ = np.linalg.lstsq(u[used], self.rows[used], rcond=None)
        self.mapped_words = {w: v.astype(np.float64) @ m for w, v in zip(words, word_vectors)}
        self.mapped_untrained = u @ m

    def __call__(self, text):
        v = np.zeros(self.c.dims)
        n = 0
        for word, ids in words_of(self.tok, text):
            ids = ids[:max(0, qs.MAX_QUERY_TOKENS - n)]
            n += len(ids)
            if not ids:
                break
            parts = (self.w[ids, None] * self.rows[ids]).sum(0)
            row = self.mapped_words.get(word) if len(ids) > 1 and self.gamma else None
            if row is None:
                v += parts
                continue
            weight = self.w[ids].sum()
            if self.how == "blend":
                v += (1 - self.gamma) * parts + self.gamma * weight * row
            else:
                v += parts + self.gamma * weight * (row - self.mapped_untrained[ids].mean(0))
        nrm = np.linalg.norm(v)
        return (v / nrm).astype(np.float32) if nrm > 0 else v.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump")
    ap.add_argument("corpus")
    ap.add_argument("cache_dir")
    ap.add_argument("--model-dir", default="/opt/lightretriever/models/all-minilm-l6-v2")
    ap.add_argument("--write-words")
    ap.add_argument("--words")
    ap.add_argument("--min-df", type=int, default=1)
    ap.add_argument("--settings", default="blend:0,blend:0.25,blend:0.5,blend:1,residual:0.5,residual:1")
    a = ap.parse_args()
    tok = qs.load_tokenizer(a.model_dir)
    c = qs.Corpus(a.dump, tok)
    if a.write_words:
        words = split_words(c, tok, qs.corpus_texts(a.dump, a.corpus), a.min_df)
        with open(a.write_words, "w") as f:
            f.writelines(w + "\n" for w in words)
        print(f"{len(words)} split words written to {a.write_words}")
        return
    words = open(a.words).read().split("\n")[:-1]
    vectors = np.fromfile(os.path.splitext(a.words)[0] + ".f32", dtype="<f4").reshape(-1, c.dims)
    assert len(words) == len(vectors), (len(words), len(vectors))
    (untrained_file,) = glob.glob(os.path.join(a.cache_dir, "untrained-*.f32"))
    untrained = np.fromfile(untrained_file, dtype="<f4").reshape(-1, c.dims)
    used = sorted({i for t in qs.corpus_texts(a.dump, a.corpus) for i in c.ids(t)})
    if c.queries:
        split = [sum(c.weights[i].sum() for w, i in words_of(tok, t) if len(i) > 1) / max(c.weights[c.ids(t)].sum(), 1e-9)
                 for _, t in c.queries]
        print(f"## {c.name}: {len(words)} split words; judged queries: {np.mean(split):.3f} of the lookup weight on split words")
    else:
        print(f"## {c.name}: {len(words)} split words")
    for setting in a.settings.split(","):
        how, gamma = setting.split(":")
        qs.report_lookup(f"{how} {gamma}", c, WordRows(c, tok, words, vectors, untrained, used, how, float(gamma)))


if __name__ == "__main__":
    main()
