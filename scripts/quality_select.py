#!/usr/bin/env python3
"""Chooses lr_search's defaults from quality_study.py's JSON files, label-free: on the inverse-
cloze pseudo-queries of every corpus, each setting's known-item MRR@10 as a ratio to the
published one (min-max, w = 0.7, no feedback); the geometric mean over corpora ranks them. The
judged queries (where a corpus has them) are printed beside, never used.

usage: quality_select.py STUDY.json [STUDY.json ...] [--form cloze] [--weight 0.7]"""
import json
import math
import sys

args = sys.argv[1:]
form = "cloze"
if "--form" in args:
    i = args.index("--form")
    form = args[i + 1]
    del args[i:i + 2]
only_weight = None
if "--weight" in args:
    i = args.index("--weight")
    only_weight = args[i + 1]
    del args[i:i + 2]
studies = {}
for path in args:
    studies.update(json.load(open(path)))
PUBLISHED = "minmax w=0.7"
names = [n for n in next(iter(studies.values())) if not n.startswith(("FULL", "GAP"))]
if only_weight:
    names = [n for n in names if f"w={only_weight}" in n]
rows = []
for n in names:
    ratios = [r[n][form] / r[PUBLISHED][form] for r in studies.values() if form in r[n]]
    gm = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    worst = min(ratios)
    judged = {c: r[n].get("judged") for c, r in studies.items() if "judged" in r[n]}
    rows.append((gm, worst, n, ratios, judged))
rows.sort(reverse=True)
print(f"form: {form}; corpora: {', '.join(studies)}; ratio to '{PUBLISHED}'")
print("| setting | geo. mean | worst | per corpus | judged nDCG@10 (record only) |")
print("|---|---:|---:|---|---|")
for gm, worst, n, ratios, judged in rows:
    print(f"| {n} | {gm:.4f} | {worst:.4f} | {' / '.join(f'{x:.3f}' for x in ratios)} | {' '.join(f'{c} {v:.4f}' for c, v in judged.items())} |")
