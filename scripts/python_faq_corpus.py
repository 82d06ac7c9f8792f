#!/usr/bin/env python3
"""The Python FAQ as a BEIR-layout collection with real, human-written queries and one judged
answer each (issue 17: a third judged collection that nobody tuned on). The questions and
answers were written by the Python documentation's authors, for people, not for retrieval and
not by us; no model chose anything.

Source: the reST sources that Debian's python3.11-doc ships under
/usr/share/doc/python3.11/html/_sources/ (rules fixed before any retrieval result was seen):

- Queries: every question heading of faq/*.rst.txt: a section heading other than the file's
  title (its first heading) that contains "?" or is at the file's deepest heading level (three
  FAQ entries at that level have no "?": "How do you remove multiple items from a list" and two
  statements, e.g. "My class defines __del__ but it is not called when I delete the object.").
  Query text = the heading with reST markup stripped.
- Relevant document (grade 1, one per query): the question's section body (up to the next
  heading of any level), markup stripped, code kept as text (verbatim); its first 200 words. A
  question whose answer has fewer than 20 words is dropped. Answers whose text is identical are
  one document, relevant to each of their questions.
- Distractors: every section of library/, tutorial/, howto/ and reference/ (not faq/, not
  whatsnew/ or anything else), one document per section = its own body (up to the next heading
  of any level), stripped the same way, first 200 words, at least 20 words; a section whose text
  equals an answer's or an earlier section's is left out; if more than SAMPLE (3,000) remain, a
  random sample of SAMPLE (seed 7) of them.
- No titles: every document's title is "" (a heading would make answers and distractors look
  different, and an answer's heading is its query verbatim).
- Document order: answers and distractors shuffled together (seed 7), ids "0", "1", ...

Markup stripping: comments, targets, substitution definitions and non-text directives (toctree,
index, module, highlight, image, include, audit-event, ...) are dropped with their blocks; other
directives keep their arguments (a function's signature, an admonition's title; not a code
block's language) and their bodies (minus :option: lines); version directives read as Sphinx
renders them ("Changed in version 3.2:"); table borders, bullets and enumerators go; roles keep
their text (:func:`x` -> x, :mod:`text <x>` -> text, :pep:`8` -> PEP 8), ``literal`` -> literal,
`text <url>`_ -> text, *emphasis* -> emphasis; footnote references go. Code (literal blocks after
"::", doctest blocks, code-block/doctest/testcode directives) is kept verbatim, inline rules not
applied. Whitespace is collapsed.

usage: python_faq_corpus.py OUT_DIR [--docs DIR] [--sample N] [--seed S]"""
import argparse
import glob
import itertools
import json
import os
import random
import re

SOURCES = "/usr/share/doc/python3.11/html/_sources"
DISTRACTOR_DIRS = ("library", "tutorial", "howto", "reference")
MAX_WORDS, MIN_WORDS = 200, 20

ADORNMENT = re.compile(r"([=\-~^\"'*+#`:._<>!$%&,/;?@\\|])\1+\s*")
# Directives whose arguments and bodies are not text a reader sees as prose.
DROP = {"toctree", "contents", "index", "image", "figure", "highlight", "module", "currentmodule",
        "sectionauthor", "moduleauthor", "include", "literalinclude", "testsetup", "testcleanup",
        "tabularcolumns", "audit-event", "audit-event-table", "program", "raw"}
# Directives whose argument is not text (a language, a tag expression, an option list).
NO_ARGS = {"code-block", "sourcecode", "only", "doctest", "testcode", "testoutput", "list-table",
           "table", "productionlist"}
# Directives whose body is code, kept verbatim.
LITERAL = {"code-block", "sourcecode", "doctest", "testcode", "testoutput"}
VERSION = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
           "deprecated": "Deprecated since version {}:",
           "deprecated-removed": "Deprecated since version {}, will be removed in version {}:"}


def headings(lines):
    """Section headings of a reST file: (first line, underline line, title text), in order, with
    the adornment (character, overlined) that gives each its level."""
    found = []
    i = 0
    while i < len(lines) - 1:
        title, under = lines[i], lines[i + 1]
        prev = lines[i - 1] if i > 0 else ""
        over = i > 0 and ADORNMENT.fullmatch(prev) is not None and prev.rstrip() == under.rstrip()
        if (title.strip() and ADORNMENT.fullmatch(under) and not ADORNMENT.fullmatch(title)
                and (over or not title[0].isspace())
                and len(under.rstrip()) >= len(title.rstrip())
                and (i == 0 or over or not prev.strip())):
            start = i - 1 if over else i
            found.append((start, i + 1, title.strip(), (under[0], over)))
            i += 2
            continue
        i += 1
    return found


def indent(line):
    return len(line) - len(line.lstrip())


def strip_blocks(lines):
    """Line-level markup: directives, comments, targets, tables, bullets, '::'. Returns
    (literal, line) pairs: literal lines (code: literal blocks, code directives, doctest blocks)
    are kept verbatim, the others still carry inline markup."""
    out = []
    skip_deeper = None  # drop every following line indented more than this (or blank)
    literal_deeper = None  # keep verbatim every following line indented more than this (or blank)
    doctest = False  # in a doctest block (">>>" paragraph), up to the next blank line
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if skip_deeper is not None:
            if not line.strip() or indent(line) > skip_deeper:
                continue
            skip_deeper = None
        if literal_deeper is not None:
            if not line.strip() or indent(line) > literal_deeper:
                out.append((True, line))
                continue
            literal_deeper = None
        if doctest and line.strip():
            out.append((True, line))
            continue
        doctest = False
        if line.lstrip().startswith(">>>"):
            doctest = True
            out.append((True, line))
            continue
        m = re.match(r"^(\s*)\.\.(\s+(.*))?$", line)
        if m:
            ind, rest = len(m.group(1)), (m.group(3) or "").strip()
            d = re.match(r"^([\w:.+-]+)::\s*(.*)$", rest)
            f = re.match(r"^\[([^\]]+)\]\s*(.*)$", rest)
            if d and not rest.startswith("|"):
                name, args = d.group(1).lower(), d.group(2)
                if name in DROP:
                    skip_deeper = ind
                    continue
                # The directive's option lines (":name: value", up to its first blank line; among
                # a signature's continuation lines) are not text.
                head = []
                while i < len(lines) and lines[i].strip() and indent(lines[i]) > ind:
                    if not re.match(r"^\s+:[\w -]+:", lines[i]):
                        head.append(lines[i].rstrip())
                    i += 1
                if name in LITERAL:
                    literal_deeper = ind
                if name in VERSION:
                    n = VERSION[name].count("{}")
                    parts = args.split(None, n)
                    parts += [""] * (n - len(parts))
                    out.append((False, " " * ind + " ".join([VERSION[name].format(*parts[:n])] + parts[n:])))
                elif name not in NO_ARGS and args:
                    out.append((False, " " * ind + args))
                out.extend((name in LITERAL, line) for line in head)
                continue
            if f:  # footnote or citation: keep its text
                out.append((False, " " * ind + f.group(2)))
                continue
            skip_deeper = ind  # comment, hyperlink target, substitution definition
            continue
        s = line.strip()
        if re.fullmatch(r"[-=+|: ]*", s) and len(s) >= 3 and re.search(r"[-=]{3,}", s):
            continue  # table border
        if s.endswith("::"):
            literal_deeper = indent(line)
            if s == "::":
                continue
            line = line[:-2].rstrip() + ("" if line[:-2].endswith(" ") else ":")
        line = re.sub(r"^(\s*)\|\s", r"\1", line)  # line block or grid table row start
        line = re.sub(r"\s\|\s*$", " ", line)
        line = re.sub(r"\s\|\s", " ", line)
        line = re.sub(r"^(\s*)([*+\-\u2022]|#\.|\d+\.|\(?\d+\))\s+", r"\1", line)
        out.append((False, line))
    return out


def role_text(role, content):
    m = re.match(r"^(.*?)\s*<([^<>]*)>$", content, re.S)
    if m and m.group(1).strip():
        content = m.group(1)
    elif m:
        content = m.group(2)
    content = content.strip()
    if content.startswith("!"):
        content = content[1:]
    if content.startswith("~"):
        content = re.split(r"\.(?=[^.]+$)", content[1:])[-1]
    r = role.lower().rstrip(":").split(":")[-1]
    if r == "pep":
        return "PEP " + content
    if r == "rfc":
        return "RFC " + content
    return content


def strip_inline(text):
    text = re.sub(r"(?<!\w):((?:[A-Za-z][\w.+-]*:)+)`(.+?)`",
                  lambda m: role_text(m.group(1), m.group(2).replace("\\`", "`")), text, flags=re.S)
    text = re.sub(r"``(.+?)``", r"\1", text, flags=re.S)
    text = re.sub(r"`([^`]*?)\s*<([^<>`]+)>`__?", lambda m: m.group(1) or m.group(2), text, flags=re.S)
    text = re.sub(r"`([^`]+?)`__?", r"\1", text, flags=re.S)
    text = re.sub(r"`([^`]+?)`", r"\1", text, flags=re.S)
    text = re.sub(r"\s?\[(#[\w-]*|\d+|\*)\]_", "", text)
    text = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", text, flags=re.S)
    text = re.sub(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", text, flags=re.S)
    text = re.sub(r"\|(\w[\w -]*)\|(?:__?)?", r"\1", text)
    text = re.sub(r"\\\n\s*", " ", text)  # a line continuation (a long signature)
    text = text.replace("\\ ", "")
    text = re.sub(r"\\(.)", r"\1", text)
    return " ".join(text.split())


def sections(path):
    """(title text, level key, body text) for every section of a reST source, in order."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    heads = headings(lines)
    out = []
    for k, (start, under, title, level) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        parts = []
        for literal, run in itertools.groupby(strip_blocks(lines[under + 1:end]), key=lambda p: p[0]):
            text = "\n".join(line for _, line in run)
            parts.append(" ".join(text.split()) if literal else strip_inline(text))
        body = " ".join(p for p in parts if p)
        out.append((title, level, body, k == 0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--docs", default=SOURCES)
    ap.add_argument("--sample", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    # Questions and their answers.
    questions, short, faq_files = [], [], sorted(glob.glob(os.path.join(a.docs, "faq", "*.rst.txt")))
    for path in faq_files:
        secs = sections(path)
        levels = []
        for _, level, _, _ in secs:
            if level not in levels:
                levels.append(level)
        deepest = len(levels) - 1
        for title, level, body, first in secs:
            query = strip_inline(title)
            if first or not ("?" in query or levels.index(level) == deepest):
                continue
            words = body.split()
            where = f"{os.path.relpath(path, a.docs)}#{query}"
            if len(words) < MIN_WORDS:
                short.append(where)
                continue
            questions.append((query, " ".join(words[:MAX_WORDS]), where))

    # Distractor sections.
    answer_texts = {t for _, t, _ in questions}
    candidates, seen, n_sections, n_short, n_dup = [], set(answer_texts), 0, 0, 0
    for d in DISTRACTOR_DIRS:
        for path in sorted(glob.glob(os.path.join(a.docs, d, "**", "*.rst.txt"), recursive=True)):
            for title, _, body, _ in sections(path):
                n_sections += 1
                words = body.split()
                if len(words) < MIN_WORDS:
                    n_short += 1
                    continue
                text = " ".join(words[:MAX_WORDS])
                if text in seen:
                    n_dup += 1
                    continue
                seen.add(text)
                candidates.append((text, f"{os.path.relpath(path, a.docs)}#{strip_inline(title)}"))
    sampled = candidates
    if len(candidates) > a.sample:
        keep = set(random.Random(a.seed).sample(range(len(candidates)), a.sample))
        sampled = [c for i, c in enumerate(candidates) if i in keep]

    # Documents: distinct answers, then distractors; shuffled together.
    docs, answer_doc = [], {}
    for _, text, where in questions:
        if text not in answer_doc:
            answer_doc[text] = len(docs)
            docs.append((text, where, "faq"))
    docs += [(text, where, "distractor") for text, where in sampled]
    order = list(range(len(docs)))
    random.Random(a.seed).shuffle(order)
    doc_id = {old: str(new) for new, old in enumerate(order)}

    os.makedirs(os.path.join(a.out, "qrels"), exist_ok=True)
    with open(os.path.join(a.out, "corpus.jsonl"), "w") as f:
        for old in order:
            text, where, kind = docs[old]
            f.write(json.dumps({"_id": doc_id[old], "title": "", "text": text, "source": where,
                                "kind": kind}) + "\n")
    with open(os.path.join(a.out, "queries.jsonl"), "w") as f, \
            open(os.path.join(a.out, "qrels", "test.tsv"), "w") as g:
        g.write("query-id\tcorpus-id\tscore\n")
        for i, (query, text, where) in enumerate(questions):
            f.write(json.dumps({"_id": f"q{i}", "text": query, "source": where}) + "\n")
            g.write(f"q{i}\t{doc_id[answer_doc[text]]}\t1\n")
    print(f"FAQ files: {len(faq_files)}; question headings: {len(questions) + len(short)}; "
          f"dropped (answer under {MIN_WORDS} words): {len(short)}" + (f" ({'; '.join(short)})" if short else ""))
    print(f"queries: {len(questions)}; distinct answer documents: {len(answer_doc)}")
    print(f"distractor sections in {', '.join(DISTRACTOR_DIRS)}: {n_sections}; under {MIN_WORDS} words: "
          f"{n_short}; duplicate text: {n_dup}; kept: {len(candidates)}; sampled: {len(sampled)} (seed {a.seed})")
    print(f"corpus: {len(docs)} documents, {len(questions)} queries; written to {a.out}")


if __name__ == "__main__":
    main()
