"""The site against a real cluster (scripts/examples.sh sets the connection): Django's own
migrations (auto-encoding included), documents saved through the ORM and the loaddocs command,
the worker's vectors, then the search command, dense, hybrid and reranked."""

import io
import json
import math
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from library import search
from library.models import Document

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
CORPUS_SLICE = 40

ROOT = Path(__file__).resolve().parents[3]
CORPUS = os.environ.get("LR_EXAMPLE_CORPUS") or next(
    str(p) for p in (ROOT.parent / "shared/data/cisi/corpus.jsonl", ROOT / "scripts/sample/corpus.jsonl") if p.exists()
)


def sql(query, params=()):
    with connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def columns():
    return {c.name for c in connection.introspection.get_table_description(connection.cursor(), Document._meta.db_table)}


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def search_ids(*args):
    return [int(line.split("\t")[0]) for line in run("search", *args).splitlines()]


@pytest.fixture(scope="module", autouse=True)
def site():
    call_command("migrate", "library", "zero", verbosity=0)  # a fresh run: drops the table if a previous one left it
    call_command("migrate", verbosity=0)
    assert {"body_embedding", "body_sparse"} <= columns(), "migration 0002 did not enable auto-encoding"
    call_command("makemigrations", "library", "--check", "--dry-run", verbosity=0)  # the migrations match the model
    for i, (title, body) in HANDWRITTEN.items():
        Document.objects.create(id=i, title=title, body=body)
    assert "encoded" in run("loaddocs", CORPUS, "--limit", str(CORPUS_SLICE), "--wait")


def test_vectors_are_filled_after_waiting():
    docs = list(Document.objects.all())
    assert len(docs) == len(HANDWRITTEN) + min(CORPUS_SLICE, sum(1 for _ in open(CORPUS)))
    for doc in docs:
        assert doc.body_embedding is not None and len(doc.body_embedding) == 384, doc
        assert doc.body_sparse is not None and doc.body_sparse.dimensions() == 30522, doc
        assert math.isclose(sum(x * x for x in doc.body_embedding), 1.0, rel_tol=1e-4), doc


def test_dense_search_puts_the_obvious_document_first():
    for q, want in OBVIOUS:
        assert search.dense(q)[0].id == want, q
        assert search_ids(q, "--mode", "dense")[0] == want, q
    if "Dewey" in Document.objects.get(id=1).title:  # the CISI slice
        assert search.dense("history of the Dewey decimal classification")[0].id == 1


def test_orm_order_equals_plain_sql():
    for q in QUERIES:
        orm = [d.id for d in search.dense(q, 10)]
        plain = [r[0] for r in sql(
            "SELECT id FROM library_document ORDER BY body_embedding <#> lightretriever.lr_encode_query(%s, %s) LIMIT 10",
            [q, settings.LIGHTRETRIEVER_DENSE_MODEL],
        )]
        assert orm == plain and len(orm) == 10, q


def test_hybrid_returns_existing_rows_in_score_order():
    existing = set(Document.objects.values_list("id", flat=True))
    for q in QUERIES:
        hits = search.hybrid(q, 5)
        ids = [d.id for d in hits]
        assert len(ids) == 5 and len(set(ids)) == 5 and set(ids) <= existing, (q, ids)
        assert [d.score for d in hits] == sorted((d.score for d in hits), reverse=True), q
        assert search_ids(q, "--mode", "hybrid") == ids, q
    for q, want in OBVIOUS:
        assert search.hybrid(q)[0].id == want, q


def test_rerank_returns_a_permutation_of_the_candidates():
    q = "lava and ash from an eruption"
    candidates = [d.id for d in search.hybrid(q, 8)]
    ranked = search.rerank(q, candidates)
    assert sorted(i for i, _ in ranked) == sorted(candidates)
    assert all(math.isfinite(s) for _, s in ranked)
    assert search_ids(q, "--mode", "hybrid", "-k", "8", "--rerank") == [i for i, _ in ranked]


def test_saving_an_instance_read_before_encoding_keeps_the_vector():
    doc = Document.objects.create(id=9007, title="Bees", body="Honey bees dance to tell the hive where the flowers are.")
    assert doc.body_embedding is None  # the instance was saved before the worker ran
    assert search.wait_for_encoding()
    doc.title = "Honey bees"
    doc.save()  # a full save of a stale instance must not erase the worker's vector
    assert Document.objects.get(id=9007).body_embedding is not None
    assert search.dense("how do bees find flowers")[0].id == 9007
    # A changed text: the stale vector is cleared at once, and encoded again.
    doc.body = "Glaciers grind down mountains and carve deep U-shaped valleys as the ice slowly moves."
    doc.save()
    assert Document.objects.get(id=9007).body_embedding is None
    assert search.wait_for_encoding()
    assert search.dense("ice carving valleys")[0].id == 9007


def test_the_migration_reverses_and_reapplies():
    call_command("migrate", "library", "0001", verbosity=0)
    assert not ({"body_embedding", "body_sparse"} & columns())
    assert sql("SELECT count(*) FROM lightretriever.lr_auto_encodings WHERE source = 'library_document'::regclass") == [(0,)]
    call_command("migrate", "library", verbosity=0)  # re-enabled: every row is queued again
    assert search.wait_for_encoding()
    assert Document.objects.filter(body_embedding__isnull=True).count() == 0
    assert search.dense("pets that purr")[0].id == 9006
