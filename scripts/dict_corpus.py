#!/usr/bin/env python3
"""A dictd database (Debian's dict-* packages) as a BEIR-layout corpus with no queries: one
document per entry (title = headword, text = the whole entry). Used as a
second, unlabelled collection for label-free quality studies (docs/quality.md).

usage: dict_corpus.py /usr/share/dictd/devil OUT_DIR [--sample N --seed S]"""
import gzip, json, os, random, sys

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def main():
    base, out = sys.argv[1], sys.argv[2]
    sample = int(sys.argv[sys.argv.index("--sample") + 1]) if "--sample" in sys.argv else None
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    data = gzip.open(base + ".dict.dz").read()
    entries = []
    for line in open(base + ".index", encoding="utf-8", errors="replace"):
        word, off, length = line.rstrip("\n").split("\t")[:3]
        if word.startswith("00database") or word.startswith("00-database"):
            continue
        body = data[b64(off): b64(off) + b64(length)].decode("utf-8", "replace")
        text = " ".join(body.split())
        if len(text.split()) >= 8:
            entries.append((word, text))
    if sample and sample < len(entries):
        entries = random.Random(seed).sample(entries, sample)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "corpus.jsonl"), "w") as f:
        for i, (word, text) in enumerate(entries):
            f.write(json.dumps({"_id": str(i), "title": word, "text": text}) + "\n")
    print(f"{len(entries)} documents in {out}")


if __name__ == "__main__":
    main()
