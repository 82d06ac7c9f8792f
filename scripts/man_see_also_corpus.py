#!/usr/bin/env python3
"""Manual pages linked by their SEE ALSO sections, as a BEIR-layout collection with queries and
graded-by-authors relevance (issue 17, docs/quality.md "A second judged corpus"). Label-free in
the sense that matters here: the links were written by the pages' authors, not by us and not
for retrieval, and no model chose them.

Documents are pages rendered as man_corpus.py renders them (title = the NAME line's
description, text = DESCRIPTION, at most 200 words; same filters). A page and every page its
SEE ALSO section names (either direction) are related. Queries are the titles of pages with at
least MIN_RELATED related pages; those pages are taken out of the corpus, and a query's
relevant documents (grade 1) are its related pages left in it. So, like CISI's queries and
unlike known-item pseudo-queries, a query has several relevant documents and its own words are
in none of them by construction.

usage: man_see_also_corpus.py OUT_DIR [--queries N] [--min-related K] [--seed S]"""
import argparse
import collections
import glob
import gzip
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import man_corpus  # noqa: E402

SECTIONS = (1, 3, 5, 7, 8)
# name(section) in a SEE ALSO section once font escapes and .BR/.IR macros are stripped.
REFERENCE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.:+\-]*)\s*\((\d)[A-Za-z]*\)")


def page_key(path):
    base = re.sub(r"\.(gz|bz2|xz)$", "", os.path.basename(path))
    m = re.match(r"(.+)\.(\d)[^.]*$", base)
    return (m.group(1), m.group(2)) if m else None


def see_also(path):
    """The (name, section) pairs a page's SEE ALSO section names, from its roff source."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        source = f.read()
    m = re.search(r'^\.S[Hh]\s+"?SEE ALSO"?\s*$(.*?)(?=^\.S[Hh]\s|\Z)', source, re.S | re.M)
    if not m:
        return set()
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", m.group(1)).replace("\\-", "-")
    refs = set()
    for line in text.splitlines():
        mr = re.match(r"^\.MR\s+(\S+)\s+(\d)", line)
        if mr:
            refs.add((mr.group(1), mr.group(2)))
        line = re.sub(r"^\.(BR|IR|RB|RI|B|I)\s+", "", line).replace('"', "")
        refs.update(REFERENCE.findall(line))
    return refs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--min-related", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    pages = sorted(p for s in SECTIONS for p in glob.glob(f"/usr/share/man/man{s}/*"))
    by_key = {}
    for p in pages:
        by_key.setdefault(page_key(p), p)
    related = collections.defaultdict(set)
    for p in pages:
        for ref in see_also(p):
            q = by_key.get(ref)
            if q and q != p:
                related[p].add(q)
                related[q].add(p)

    # Render every linked page; keep those man_corpus.py would keep (distinct titles).
    docs, titles = {}, set()
    for p in sorted(related):
        doc = man_corpus.page_document(p, titles)
        if doc:
            docs[p] = doc
    related = {p: {q for q in qs if q in docs} for p, qs in related.items() if p in docs}

    # Query pages, drawn at random among those with enough related pages, each leaving the corpus;
    # a draw is skipped if it would leave an earlier query with too few relevant documents.
    candidates = sorted(p for p, qs in related.items() if len(qs) >= a.min_related)
    random.Random(a.seed).shuffle(candidates)
    queries = []
    taken = set()
    for p in candidates:
        if len(queries) >= a.queries:
            break
        if p in taken:
            continue
        if len(related[p] - taken - {p}) < a.min_related:
            continue
        if any(len(related[q] - taken - {p}) < a.min_related for q in queries if p in related[q]):
            continue
        queries.append(p)
        taken.add(p)

    corpus = [p for p in sorted(docs) if p not in taken]
    ids = {p: str(i) for i, p in enumerate(corpus)}
    os.makedirs(os.path.join(a.out, "qrels"), exist_ok=True)
    with open(os.path.join(a.out, "corpus.jsonl"), "w") as f:
        for p in corpus:
            f.write(json.dumps({"_id": ids[p], "title": docs[p]["title"], "text": docs[p]["text"],
                                "page": os.path.basename(p)}) + "\n")
    with open(os.path.join(a.out, "queries.jsonl"), "w") as f, open(os.path.join(a.out, "qrels", "test.tsv"), "w") as g:
        g.write("query-id\tcorpus-id\tscore\n")
        for i, p in enumerate(queries):
            f.write(json.dumps({"_id": f"q{i}", "text": docs[p]["title"], "page": os.path.basename(p)}) + "\n")
            for q in sorted(related[p] - taken):
                g.write(f"q{i}\t{ids[q]}\t1\n")
    judged = [len(related[p] - taken) for p in queries]
    print(f"{len(corpus)} pages, {len(queries)} queries, relevant per query: mean "
          f"{sum(judged) / max(len(judged), 1):.1f}, min {min(judged, default=0)}, max {max(judged, default=0)}; "
          f"written to {a.out}")


if __name__ == "__main__":
    main()
