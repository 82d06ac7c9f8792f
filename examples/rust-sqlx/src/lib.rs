//! A small sqlx + pgvector app on lightretriever: documents whose vectors the extension's encoder
//! worker fills in the background (auto-encoding, enabled by the migration in `migrations/`),
//! queries encoded inside PostgreSQL by table lookup, dense and hybrid search, reranking.
//!
//! Connection: the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE; sqlx reads it), tables
//! in schema APP_SCHEMA (any database: each one with an active auto-encoding is drained).

use pgvector::{SparseVector, Vector};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::FromRow;

/// The models the migration auto-encodes with, and the reranker (registered by a superuser).
pub const DENSE_MODEL: &str = "all-minilm-l6-v2";
pub const SPARSE_MODEL: &str = "splade-tiny";
pub const RERANKER: &str = "pe-rank-tiny";

/// `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!();

#[derive(Debug, Clone, FromRow)]
pub struct Doc {
    pub id: i64,
    pub title: String,
    pub body: Option<String>,
    /// Written by lightretriever's worker (NULL until it has encoded the row's body).
    pub body_embedding: Option<Vector>,
    pub body_sparse: Option<SparseVector>,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Hit {
    pub id: i64,
    pub title: String,
    pub score: f32,
}

pub fn schema() -> String {
    std::env::var("APP_SCHEMA").unwrap_or_else(|_| "lr_example_sqlx".into())
}

/// A pool whose connections use the app's schema (then public, where pgvector's types are).
pub async fn connect() -> sqlx::Result<PgPool> {
    let options = PgConnectOptions::new().options([("search_path", format!("{},public", schema()))]);
    PgPoolOptions::new().max_connections(4).connect_with(options).await
}

pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

pub async fn add_doc(pool: &PgPool, id: i64, title: &str, body: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO docs (id, title, body) VALUES ($1, $2, $3)").bind(id).bind(title).bind(body).execute(pool).await?;
    Ok(())
}

/// True once the worker has encoded every queued row (lr_wait_for_encoding).
pub async fn wait_for_encoding(pool: &PgPool, seconds: f64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT lightretriever.lr_wait_for_encoding('docs', make_interval(secs => $1))").bind(seconds).fetch_one(pool).await
}

pub async fn docs(pool: &PgPool) -> sqlx::Result<Vec<Doc>> {
    sqlx::query_as("SELECT id, title, body, body_embedding, body_sparse FROM docs ORDER BY id").fetch_all(pool).await
}

/// The query's vector, looked up inside PostgreSQL (no model run).
pub async fn encode_query(pool: &PgPool, q: &str) -> sqlx::Result<Vector> {
    sqlx::query_scalar("SELECT lightretriever.lr_encode_query($1, $2)").bind(q).bind(DENSE_MODEL).fetch_one(pool).await
}

/// Nearest documents by inner product: ORDER BY body_embedding <#> lr_encode_query(q).
pub async fn search_dense(pool: &PgPool, q: &str, k: i64) -> sqlx::Result<Vec<Hit>> {
    sqlx::query_as(
        "SELECT id, title, (-(body_embedding <#> lightretriever.lr_encode_query($1, $2)))::real AS score
           FROM docs ORDER BY body_embedding <#> lightretriever.lr_encode_query($1, $2) LIMIT $3",
    )
    .bind(q)
    .bind(DENSE_MODEL)
    .bind(k)
    .fetch_all(pool)
    .await
}

/// The same search with a query vector the app holds (encoded once, bound as a parameter).
pub async fn search_by_vector(pool: &PgPool, v: &Vector, k: i64) -> sqlx::Result<Vec<Hit>> {
    sqlx::query_as("SELECT id, title, (-(body_embedding <#> $1))::real AS score FROM docs ORDER BY body_embedding <#> $1 LIMIT $2")
        .bind(v)
        .bind(k)
        .fetch_all(pool)
        .await
}

/// Dense + sparse, fused by lr_search (z-score normalised per side, 0.7/0.3: its default).
pub async fn search_hybrid(pool: &PgPool, q: &str, k: i32) -> sqlx::Result<Vec<Hit>> {
    sqlx::query_as(
        "SELECT s.id, d.title, s.score FROM lightretriever.lr_search('docs', $1, $2, 'hybrid') s JOIN docs d USING (id)
          ORDER BY s.score DESC, s.id",
    )
    .bind(q)
    .bind(k)
    .fetch_all(pool)
    .await
}

/// lr_rerank of `ids` (in first-stage order): (id, score), best first. The passages are the rows'
/// text, encoded in the worker by the reranker's own encoder.
pub async fn rerank(pool: &PgPool, q: &str, ids: &[i64]) -> sqlx::Result<Vec<(i64, f32)>> {
    sqlx::query_as("SELECT id, score FROM lightretriever.lr_rerank($1, $2, 'docs', $3) ORDER BY rank")
        .bind(q)
        .bind(ids)
        .bind(RERANKER)
        .fetch_all(pool)
        .await
}

/// Hybrid retrieval of k documents reranked in the same call (lr_search's `rerank`), in the
/// reranker's order; `score` is the reranker's.
pub async fn search_reranked(pool: &PgPool, q: &str, k: i32) -> sqlx::Result<Vec<Hit>> {
    sqlx::query_as(
        "SELECT s.id, d.title, s.rerank_score AS score
           FROM lightretriever.lr_search('docs', $1, $2, rerank => $2, rerank_model => $3)
                WITH ORDINALITY AS s(id, score, dense_score, sparse_score, rerank_score, n)
           JOIN docs d USING (id)
          ORDER BY s.n",
    )
    .bind(q)
    .bind(k)
    .bind(RERANKER)
    .fetch_all(pool)
    .await
}
