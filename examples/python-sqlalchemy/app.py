"""A small SQLAlchemy 2 app on lightretriever (psycopg 3, pgvector-python).

Documents are plain ORM objects; lightretriever's encoder worker fills their vectors in the
background (auto-encoding), queries are encoded inside PostgreSQL by table lookup.

    python app.py migrate                 # create the table, enable auto-encoding, HNSW index
    python app.py add 7 "Title" "Body"    # insert through the session
    python app.py search "query" [--hybrid] [--rerank]

Connection: the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE), or DATABASE_URL; the
tables live in schema APP_SCHEMA (any database: each one with an active auto-encoding is
drained). A superuser has created the extension and
registered the models (scripts/examples.sh does it; see ../README.md).
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

from pgvector import SparseVector
from pgvector.sqlalchemy import SPARSEVEC, Vector
from sqlalchemy import BigInteger, Engine, Text, cast, create_engine, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, REGCLASS
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

SCHEMA = os.environ.get("APP_SCHEMA", "lr_example_sqlalchemy")
DENSE_MODEL = os.environ.get("LR_DENSE_MODEL", "all-minilm-l6-v2")
SPARSE_MODEL = os.environ.get("LR_SPARSE_MODEL", "splade-tiny")
RERANKER = os.environ.get("LR_RERANKER", "pe-rank-tiny")

lr = func.lightretriever  # the extension's functions, schema-qualified: lr.lr_search(...)


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    # Added by lr_enable_auto_encoding (<text_column>_embedding, <text_column>_sparse) and written
    # by the encoder worker: system=True leaves them out of CREATE TABLE, and the app never sets
    # them (the ORM only writes the attributes it changed).
    embedding: Mapped[list[float] | None] = mapped_column("body_embedding", Vector(384), system=True)
    sparse: Mapped[SparseVector | None] = mapped_column("body_sparse", SPARSEVEC(30522), system=True)

    def __repr__(self) -> str:
        return f"Doc({self.id}, {self.title!r})"


def engine(url: str | None = None) -> Engine:
    """An engine whose connections use the app's schema (then public, where pgvector's types are)."""
    url = url or os.environ.get("DATABASE_URL", "postgresql+psycopg://")  # empty: libpq's PG* variables
    return create_engine(url, connect_args={"options": f"-c search_path={SCHEMA},public"})


def source():
    """The table as lightretriever's functions take it (regclass, resolved through the search path)."""
    return cast(Doc.__tablename__, REGCLASS)


def migrate(eng: Engine) -> None:
    """What a migration of this app does: the table, auto-encoding of `body`, an HNSW index."""
    with eng.begin() as conn:
        Base.metadata.create_all(conn)
        enabled = conn.scalar(
            text("SELECT EXISTS (SELECT FROM lightretriever.lr_auto_encodings WHERE source = CAST(:t AS regclass))"),
            {"t": Doc.__tablename__},
        )
        if not enabled:
            # Adds body_embedding vector(384) and body_sparse sparsevec(30522), the queue and the
            # triggers; from now on every insert or text change is encoded by the worker.
            conn.execute(select(lr.lr_enable_auto_encoding(source(), "body", DENSE_MODEL, SPARSE_MODEL)))
        conn.execute(text("CREATE INDEX IF NOT EXISTS docs_body_embedding_hnsw ON docs USING hnsw (body_embedding vector_ip_ops)"))


def wait_for_encoding(session: Session, seconds: float = 120) -> bool:
    """True once the worker has encoded every queued row (lr_wait_for_encoding)."""
    return session.scalar(select(lr.lr_wait_for_encoding(source(), timedelta(seconds=seconds))))


def query_vector(q: str):
    """The query's vector: a table lookup inside the backend, no model run."""
    return lr.lr_encode_query(q, DENSE_MODEL)


def search_dense(session: Session, q: str, k: int = 5) -> list[Doc]:
    """Nearest documents by inner product: ORDER BY body_embedding <#> lr_encode_query(q)."""
    stmt = select(Doc).order_by(Doc.embedding.max_inner_product(query_vector(q))).limit(k)
    return list(session.scalars(stmt))


def search_hybrid(session: Session, q: str, k: int = 5) -> list[tuple[Doc, float]]:
    """Dense + sparse fused by lr_search, used as a table-valued function joined to the model."""
    hits = lr.lr_search(source(), q, k, "hybrid").table_valued("id", "score", "dense_score", "sparse_score")
    stmt = select(Doc, hits.c.score).select_from(hits).join(Doc, Doc.id == hits.c.id).order_by(hits.c.score.desc(), Doc.id)
    return [(doc, score) for doc, score in session.execute(stmt)]


def rerank(session: Session, q: str, ids: list[int]) -> list[tuple[int, float]]:
    """lr_rerank of the given ids (first-stage order): (id, score), best first. The passages are
    the rows' auto-encoded text, encoded in the worker by the reranker's own encoder."""
    ranked = lr.lr_rerank(q, cast(ids, ARRAY(BigInteger)), source(), RERANKER).table_valued("rank", "id", "score")
    return [(i, s) for i, s in session.execute(select(ranked.c.id, ranked.c.score).order_by(ranked.c.rank))]


def search_and_rerank(session: Session, q: str, k: int = 5) -> list[Doc]:
    """Hybrid retrieval of k documents, then the reranker's order."""
    first = [doc for doc, _ in search_hybrid(session, q, k)]
    by_id = {doc.id: doc for doc in first}
    return [by_id[i] for i, _ in rerank(session, q, [doc.id for doc in first])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate")
    a = sub.add_parser("add")
    a.add_argument("id", type=int)
    a.add_argument("title")
    a.add_argument("body")
    s = sub.add_parser("search")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--hybrid", action="store_true")
    s.add_argument("--rerank", action="store_true", help="hybrid, then reranked")
    args = p.parse_args()
    eng = engine()
    if args.cmd == "migrate":
        migrate(eng)
        return
    with Session(eng) as session:
        if args.cmd == "add":
            session.add(Doc(id=args.id, title=args.title, body=args.body))
            session.commit()
            print("encoded" if wait_for_encoding(session) else "still queued")
        elif args.rerank:
            for doc in search_and_rerank(session, args.query, args.k):
                print(doc.id, doc.title)
        elif args.hybrid:
            for doc, score in search_hybrid(session, args.query, args.k):
                print(doc.id, f"{score:.3f}", doc.title)
        else:
            for doc in search_dense(session, args.query, args.k):
                print(doc.id, doc.title)


if __name__ == "__main__":
    main()
