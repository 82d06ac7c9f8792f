#!/usr/bin/env python3
"""Chooses lr_search's defaults from quality_study.py's JSON files, label-free: on the inverse-
cloze pseudo-queries of every corpus, each setting's known-item MRR@10 as a ratio to the
published one (min-max, w = 0.7, no feedback); the geometric mean over corpora ranks them. The
judged queries (where a corpus has them) are printed beside, never used.

--tau prints instead, for every corpus with judged queries, Kendall's tau-b between each pseudo-query
form's ranking of the settings and the judged ranking (over all settings, and over those at
--weight if given): how far each form can stand in for judgements.

usage: quality_select.py STUDY.json [STUDY.json ...] [--form cloze] [--weight 0.7] [--tau]"""
import argparse
import json
import math
import sys

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("studies", nargs="+", metavar="STUDY.json")
ap.add_argument("--form", default="cloze")
ap.add_argument("--weight", help="only the settings at this fusion weight, e.g. 0.7")
ap.add_argument("--tau", action="store_true", help="print Kendall's tau-b against the judged ranking instead")
parsed = ap.parse_args()
form, only_weight, tau_only = parsed.form, parsed.weight, parsed.tau
studies = {}
for path in parsed.studies:
    studies.update(json.load(open(path)))
PUBLISHED = "minmax w=0.7"
all_names = [n for n in next(iter(studies.values())) if not n.startswith(("FULL", "GAP"))]
names = [n for n in all_names if f"w={only_weight}" in n] if only_weight else all_names


def kendall_tau(pairs):
    """Kendall's tau-b over (x, y) pairs (ties in either coordinate handled as tau-b does)."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            dx, dy = pairs[i][0] - pairs[j][0], pairs[i][1] - pairs[j][1]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx * dy > 0:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else 0.0


if tau_only:
    for corpus, r in studies.items():
        forms = [f for f in r[all_names[0]] if f != "judged"]
        if "judged" not in r[all_names[0]]:
            continue
        subset = f"w = {only_weight}" if only_weight else "all settings again (no --weight)"
        print(f"{corpus}: Kendall's tau-b with the judged ranking ({len(all_names)} settings; {len(names)} at {subset})")
        print(f"| form | tau-b, all settings | tau-b, {subset} |")
        print("|---|---:|---:|")
        for f in forms:
            t_all = kendall_tau([(r[n][f], r[n]["judged"]) for n in all_names])
            t_w = kendall_tau([(r[n][f], r[n]["judged"]) for n in names])
            print(f"| {f} | {t_all:+.2f} | {t_w:+.2f} |")
    sys.exit(0)
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
