#!/usr/bin/env python3
"""Manual pages as a BEIR-layout corpus with titles and no queries: one document per page, the
title its NAME line's description ("list directory contents"), the text its DESCRIPTION section
(at most 200 words). A second corpus with real titles, for the title pseudo-queries of the
label-free quality study (docs/quality.md). Pages are English (/usr/share/man/man{1,3,5,7,8}),
rendered by man(1); pages whose title or description is too short, and repeated titles, are
left out.

usage: man_corpus.py OUT_DIR [--sample N] [--seed S]"""
import glob
import json
import os
import random
import re
import subprocess
import sys


def render(path):
    env = dict(os.environ, MANWIDTH="2000", MAN_KEEP_FORMATTING="0")
    out = subprocess.run(["man", "-l", "-P", "cat", path], capture_output=True, env=env, timeout=30).stdout
    return re.sub(r".\x08", "", out.decode("utf-8", "replace"))


def sections(text):
    """Top-level sections of a rendered page: heading (unindented, upper case) → body."""
    found, name, body = {}, None, []
    for line in text.splitlines():
        if line and not line[0].isspace() and line.strip().isupper():
            if name:
                found.setdefault(name, " ".join(" ".join(body).split()))
            name, body = line.strip(), []
        elif name:
            body.append(line)
    if name:
        found.setdefault(name, " ".join(" ".join(body).split()))
    return found


def page_document(path, titles):
    """A page as {"title", "text"}, or None when it cannot be rendered, its title or description
    is too short, or its title (lower case) is in `titles`, which a kept page's title joins."""
    try:
        found = sections(render(path))
    except (subprocess.TimeoutExpired, OSError):
        return None
    name, description = found.get("NAME", ""), found.get("DESCRIPTION", "")
    title = name.split(" - ", 1)[1].strip() if " - " in name else ""
    words = description.split()
    if len(title.split()) < 3 or len(words) < 30 or title.lower() in titles:
        return None
    titles.add(title.lower())
    return {"title": title, "text": " ".join(words[:200])}


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    out = args[0]
    sample = int(args[args.index("--sample") + 1]) if "--sample" in args else 1500
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 7
    pages = sorted(p for s in (1, 3, 5, 7, 8) for p in glob.glob(f"/usr/share/man/man{s}/*"))
    random.Random(seed).shuffle(pages)
    docs, titles = [], set()
    for path in pages:
        if len(docs) >= sample:
            break
        doc = page_document(path, titles)
        if doc:
            docs.append({"_id": str(len(docs)), **doc})
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "corpus.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    print(f"{len(docs)} pages written to {out}/corpus.jsonl")


if __name__ == "__main__":
    main()
