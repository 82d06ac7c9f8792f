"""Search on lightretriever: dense through the ORM, hybrid through lr_search, reranking."""

from django.conf import settings
from django.db import connection
from django.db.models import Func, Value
from pgvector.django import MaxInnerProduct, VectorField

from .models import Document


def encode_query(q):
    """lightretriever.lr_encode_query(q, model): a table lookup inside PostgreSQL, no model run."""
    return Func(Value(q), Value(settings.LIGHTRETRIEVER_DENSE_MODEL), function="lightretriever.lr_encode_query", output_field=VectorField())


def dense(q, k=5):
    """Documents by inner product with the query: ORDER BY body_embedding <#> lr_encode_query(q).
    `distance` is the negative inner product (pgvector's <#>)."""
    return Document.objects.annotate(distance=MaxInnerProduct("body_embedding", encode_query(q))).order_by("distance")[:k]


def hybrid(q, k=5):
    """Dense + sparse fused by lr_search (each document gets `score`, `dense_score`, `sparse_score`)."""
    table = Document._meta.db_table
    return list(Document.objects.raw(
        f"SELECT d.*, s.score, s.dense_score, s.sparse_score"
        f"  FROM lightretriever.lr_search(%s::regclass, %s, %s, 'hybrid') s JOIN {connection.ops.quote_name(table)} d ON d.id = s.id"
        f" ORDER BY s.score DESC, d.id",
        [table, q, k],
    ))


def rerank(q, ids):
    """lr_rerank of the given ids (first-stage order): [(id, score)], best first. The passages are
    the rows' text, encoded in the worker by the reranker's own encoder."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT id, score FROM lightretriever.lr_rerank(%s, %s::bigint[], %s::regclass, %s) ORDER BY rank",
            [q, list(ids), Document._meta.db_table, settings.LIGHTRETRIEVER_RERANKER],
        )
        return cur.fetchall()


def wait_for_encoding(seconds=120):
    """True once the worker has encoded every queued row."""
    with connection.cursor() as cur:
        cur.execute("SELECT lightretriever.lr_wait_for_encoding(%s::regclass, make_interval(secs => %s))", [Document._meta.db_table, seconds])
        return cur.fetchone()[0]
