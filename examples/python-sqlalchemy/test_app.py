"""The app against a real cluster (scripts/examples.sh sets the connection): migrate, insert
through the session, wait for the worker, then dense, hybrid and reranked search."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import app
from app import Doc

# Clearly distinct documents: each query below has one obvious answer.
HANDWRITTEN = {
    9001: ("Cooking pasta", "Boil the spaghetti in plenty of salted water for nine minutes, drain it and toss it with tomato sauce and fresh basil."),
    9002: ("Volcano", "The volcano erupted at dawn, sending rivers of lava and clouds of ash over the villages on its slopes."),
    9003: ("Football final", "The striker scored twice in the second half and her team won the league championship."),
    9004: ("Mars rover", "The spacecraft entered orbit around Mars and landed a rover that drills into the red rocks."),
    9005: ("Interest rates", "The central bank raised interest rates again to bring inflation down."),
    9006: ("Cats", "Cats sleep for most of the day and purr when they are content."),
}
OBVIOUS = [
    ("how long should I boil spaghetti", 9001),
    ("lava and ash from an eruption", 9002),
    ("which team won the league", 9003),
    ("inflation and the central bank", 9005),
    ("pets that purr", 9006),
]
QUERIES = [q for q, _ in OBVIOUS] + ["history of the Dewey decimal classification", "automatic indexing of documents"]

ROOT = Path(__file__).resolve().parents[2]


def corpus_slice(n: int = 40) -> list[tuple[int, str, str]]:
    """The first n documents of the real collection (CISI), else the repository's sample."""
    path = os.environ.get("LR_EXAMPLE_CORPUS") or next(
        (str(p) for p in (ROOT.parent / "shared/data/cisi/corpus.jsonl", ROOT / "scripts/sample/corpus.jsonl") if p.exists())
    )
    out = []
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            out.append((int(d["_id"]), d["title"], f"{d['title']} {d['text']}"))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def engine():
    eng = app.engine()
    with eng.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS docs"))  # a fresh run; the extension forgets its queue
    app.migrate(eng)
    app.migrate(eng)  # a second run of the migration changes nothing
    docs = [Doc(id=i, title=t, body=b) for i, (t, b) in HANDWRITTEN.items()]
    docs += [Doc(id=i, title=t, body=b) for i, t, b in corpus_slice()]
    with Session(eng) as session:
        session.add_all(docs)
        session.commit()
        assert app.wait_for_encoding(session), "the worker did not encode the documents in time"
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine):
    with Session(engine) as s:
        yield s


def test_vectors_are_filled_after_waiting(session):
    docs = session.scalars(select(Doc)).all()
    assert len(docs) == len(HANDWRITTEN) + len(corpus_slice())
    for doc in docs:
        assert doc.embedding is not None and len(doc.embedding) == 384, doc
        assert doc.sparse is not None, doc
        assert math.isclose(sum(x * x for x in doc.embedding), 1.0, rel_tol=1e-4), doc  # L2-normalised
    status = session.execute(text("SELECT pending, failed, done FROM lightretriever.lr_encoding_status WHERE source = 'docs'::regclass")).one()
    assert tuple(status) == (0, 0, len(docs))


def test_dense_search_puts_the_obvious_document_first(session):
    for q, want in OBVIOUS:
        got = app.search_dense(session, q)
        assert got[0].id == want, f"{q!r}: {got}"
    if session.get(Doc, 1) and "Dewey" in session.get(Doc, 1).title:  # the CISI slice
        assert app.search_dense(session, "history of the Dewey decimal classification")[0].id == 1


def test_orm_order_equals_plain_sql(session):
    for q in QUERIES:
        orm = [doc.id for doc in app.search_dense(session, q, k=10)]
        sql = session.scalars(
            text("SELECT id FROM docs ORDER BY body_embedding <#> lightretriever.lr_encode_query(:q, :m) LIMIT 10"),
            {"q": q, "m": app.DENSE_MODEL},
        ).all()
        assert orm == sql, q
        assert len(orm) == 10


def test_hybrid_returns_existing_rows_in_score_order(session):
    existing = set(session.scalars(select(Doc.id)))
    for q in QUERIES:
        hits = app.search_hybrid(session, q, k=5)
        ids = [doc.id for doc, _ in hits]
        assert len(ids) == 5 and len(set(ids)) == 5 and set(ids) <= existing, (q, ids)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) for s in scores), (q, scores)  # z-score fused: unbounded
    for q, want in OBVIOUS:
        assert app.search_hybrid(session, q)[0][0].id == want, q


def test_rerank_returns_a_permutation_of_the_candidates(session):
    q = "lava and ash from an eruption"
    candidates = [doc.id for doc, _ in app.search_hybrid(session, q, k=8)]
    ranked = app.rerank(session, q, candidates)
    assert sorted(i for i, _ in ranked) == sorted(candidates)
    assert all(math.isfinite(s) for _, s in ranked)
    reranked_docs = app.search_and_rerank(session, q, k=8)
    assert [d.id for d in reranked_docs] == [i for i, _ in ranked]  # deterministic: the same order again


def test_a_changed_text_is_cleared_at_once_and_encoded_again(session):
    doc = session.get(Doc, 9006)
    doc.body = "Glaciers grind down mountains and carve deep U-shaped valleys as the ice slowly moves."
    session.commit()
    assert session.scalar(select(Doc.embedding).where(Doc.id == 9006)) is None  # no stale vector, ever
    assert app.wait_for_encoding(session)
    session.expire_all()
    assert session.get(Doc, 9006).embedding is not None
    assert app.search_dense(session, "ice carving valleys")[0].id == 9006
    assert app.search_dense(session, "pets that purr")[0].id != 9006
    # A title-only change keeps the vector (only changed attributes are written).
    doc = session.get(Doc, 9006)
    doc.title = "Glaciers"
    session.commit()
    assert session.scalar(select(func.count()).where(Doc.id == 9006, Doc.embedding.is_not(None))) == 1
