//! The app against a real cluster (scripts/examples.sh sets the connection): the migration
//! (auto-encoding), documents inserted by the app, the worker's vectors, then dense, hybrid and
//! reranked search. The tests share one table and run one at a time.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

use lr_example_sqlx as app;
use sqlx::PgPool;

const HANDWRITTEN: &[(i64, &str, &str)] = &[
    (9001, "Cooking pasta", "Boil the spaghetti in plenty of salted water for nine minutes, drain it and toss it with tomato sauce and fresh basil."),
    (9002, "Volcano", "The volcano erupted at dawn, sending rivers of lava and clouds of ash over the villages on its slopes."),
    (9003, "Football final", "The striker scored twice in the second half and her team won the league championship."),
    (9004, "Mars rover", "The spacecraft entered orbit around Mars and landed a rover that drills into the red rocks."),
    (9005, "Interest rates", "The central bank raised interest rates again to bring inflation down."),
    (9006, "Cats", "Cats sleep for most of the day and purr when they are content."),
];
const OBVIOUS: &[(&str, i64)] = &[
    ("how long should I boil spaghetti", 9001),
    ("lava and ash from an eruption", 9002),
    ("which team won the league", 9003),
    ("inflation and the central bank", 9005),
    ("pets that purr", 9006),
];
const OTHER_QUERIES: &[&str] = &["history of the Dewey decimal classification", "automatic indexing of documents"];
const CORPUS_SLICE: usize = 40;

fn queries() -> impl Iterator<Item = &'static str> {
    OBVIOUS.iter().map(|(q, _)| *q).chain(OTHER_QUERIES.iter().copied())
}

/// The first documents of the real collection (CISI), else the repository's sample: (id, title, title + text).
fn corpus_slice() -> Vec<(i64, String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = std::env::var("LR_EXAMPLE_CORPUS").map(Into::into).unwrap_or_else(|_| {
        let cisi = root.join("../shared/data/cisi/corpus.jsonl");
        if cisi.exists() { cisi } else { root.join("scripts/sample/corpus.jsonl") }
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .take(CORPUS_SLICE)
        .map(|line| {
            let field = |name: &str| json_string(line, name);
            (field("_id").parse().unwrap(), field("title"), format!("{} {}", field("title"), field("text")))
        })
        .collect()
}

/// A string field of a one-line JSON object (BEIR's corpus lines), without a JSON dependency.
fn json_string(line: &str, name: &str) -> String {
    let start = line.find(&format!("\"{name}\": \"")).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len() + 5;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next().unwrap() {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap_or('\u{fffd}'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    panic!("unterminated {name} in {line}")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Once per test binary: a fresh table through the app's migration, the documents, their vectors.
/// Then every test holds the lock, so that no two of them use the table at once.
fn setup() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static READY: OnceLock<()> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    READY.get_or_init(|| {
        rt().block_on(async {
            let pool = app::connect().await.expect("connect (PGHOST, PGPORT, PGUSER, PGDATABASE)");
            sqlx::raw_sql("DROP TABLE IF EXISTS docs; DROP TABLE IF EXISTS _sqlx_migrations").execute(&pool).await.unwrap();
            app::migrate(&pool).await.expect("migration");
            app::migrate(&pool).await.expect("a second run changes nothing");
            for (id, title, body) in HANDWRITTEN {
                app::add_doc(&pool, *id, title, body).await.unwrap();
            }
            for (id, title, body) in corpus_slice() {
                app::add_doc(&pool, id, &title, &body).await.unwrap();
            }
            assert!(app::wait_for_encoding(&pool, 120.0).await.unwrap(), "the worker did not encode the documents in time");
        })
    });
    guard
}

async fn pool() -> PgPool {
    app::connect().await.unwrap()
}

fn ids(hits: &[app::Hit]) -> Vec<i64> {
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn vectors_are_filled_after_waiting() {
    let _serial = setup();
    rt().block_on(async {
        let docs = app::docs(&pool().await).await.unwrap();
        assert_eq!(docs.len(), HANDWRITTEN.len() + corpus_slice().len());
        for d in &docs {
            let v = d.body_embedding.as_ref().unwrap_or_else(|| panic!("{} has no vector", d.id)).as_slice();
            assert_eq!(v.len(), 384);
            assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "{} is not L2-normalised", d.id);
            let s = d.body_sparse.as_ref().unwrap_or_else(|| panic!("{} has no sparse vector", d.id));
            assert_eq!(s.dimensions(), 30522);
            assert!(!s.indices().is_empty());
        }
    });
}

#[test]
fn dense_search_puts_the_obvious_document_first() {
    let _serial = setup();
    rt().block_on(async {
        let pool = pool().await;
        for (q, want) in OBVIOUS {
            let hits = app::search_dense(&pool, q, 5).await.unwrap();
            assert_eq!(hits[0].id, *want, "{q}: {hits:?}");
        }
        let first = app::docs(&pool).await.unwrap().into_iter().find(|d| d.id == 1);
        if first.is_some_and(|d| d.title.contains("Dewey")) {
            assert_eq!(app::search_dense(&pool, "history of the Dewey decimal classification", 1).await.unwrap()[0].id, 1);
        }
    });
}

#[test]
fn the_order_is_the_inner_product_order_computed_here() {
    let _serial = setup();
    rt().block_on(async {
        let pool = pool().await;
        let docs = app::docs(&pool).await.unwrap();
        for q in queries() {
            // The query vector as the app receives it, bound back as a parameter: the same order.
            let v = app::encode_query(&pool, q).await.unwrap();
            let sql = app::search_dense(&pool, q, 10).await.unwrap();
            assert_eq!(ids(&app::search_by_vector(&pool, &v, 10).await.unwrap()), ids(&sql), "{q}");
            // The inner products computed here from the decoded vectors agree with the server's order.
            let ip = |id: i64| {
                let d = docs.iter().find(|d| d.id == id).unwrap();
                d.body_embedding.as_ref().unwrap().as_slice().iter().zip(v.as_slice()).map(|(a, b)| a * b).sum::<f32>()
            };
            let mut here: Vec<(i64, f32)> = docs.iter().map(|d| (d.id, ip(d.id))).collect();
            here.sort_by(|a, b| b.1.total_cmp(&a.1));
            assert_eq!(here[0].0, sql[0].id, "{q}");
            for (h, s) in sql.iter().zip(&here) {
                assert!((h.score - s.1).abs() < 1e-4, "{q}: server {} {} vs here {} {}", h.id, h.score, s.0, s.1);
                assert!((ip(h.id) - h.score).abs() < 1e-4, "{q}: {}", h.id);
            }
        }
    });
}

#[test]
fn hybrid_returns_existing_rows_in_score_order() {
    let _serial = setup();
    rt().block_on(async {
        let pool = pool().await;
        let existing: HashSet<i64> = app::docs(&pool).await.unwrap().iter().map(|d| d.id).collect();
        for q in queries() {
            let hits = app::search_hybrid(&pool, q, 5).await.unwrap();
            let got: HashSet<i64> = ids(&hits).into_iter().collect();
            assert!(hits.len() == 5 && got.len() == 5 && got.is_subset(&existing), "{q}: {hits:?}");
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score) && hits.iter().all(|h| h.score.is_finite()), "{q}: {hits:?}");
        }
        for (q, want) in OBVIOUS {
            assert_eq!(app::search_hybrid(&pool, q, 5).await.unwrap()[0].id, *want, "{q}");
        }
    });
}

#[test]
fn rerank_returns_a_permutation_and_lr_search_reranks_alike() {
    let _serial = setup();
    rt().block_on(async {
        let pool = pool().await;
        let q = "lava and ash from an eruption";
        let candidates = ids(&app::search_hybrid(&pool, q, 8).await.unwrap());
        let ranked = app::rerank(&pool, q, &candidates).await.unwrap();
        let mut got: Vec<i64> = ranked.iter().map(|r| r.0).collect();
        assert!(ranked.iter().all(|r| r.1.is_finite()), "{ranked:?}");
        // lr_search(..., rerank => 8) reranks its own top 8 the way lr_rerank does.
        assert_eq!(ids(&app::search_reranked(&pool, q, 8).await.unwrap()), got);
        got.sort_unstable();
        let mut want = candidates.clone();
        want.sort_unstable();
        assert_eq!(got, want, "not a permutation of the candidates");
    });
}

#[test]
fn a_changed_text_is_cleared_at_once_and_encoded_again() {
    let _serial = setup();
    rt().block_on(async {
        let pool = pool().await;
        app::add_doc(&pool, 9007, "Bees", "Honey bees dance to tell the hive where the flowers are.").await.unwrap();
        assert!(app::wait_for_encoding(&pool, 120.0).await.unwrap());
        assert_eq!(app::search_dense(&pool, "how do bees find flowers", 1).await.unwrap()[0].id, 9007);
        sqlx::query("UPDATE docs SET body = $2 WHERE id = $1")
            .bind(9007_i64)
            .bind("Glaciers grind down mountains and carve deep U-shaped valleys as the ice slowly moves.")
            .execute(&pool)
            .await
            .unwrap();
        let stale: Option<pgvector::Vector> = sqlx::query_scalar("SELECT body_embedding FROM docs WHERE id = 9007").fetch_one(&pool).await.unwrap();
        assert!(stale.is_none(), "a stale vector survived the text change");
        assert!(app::wait_for_encoding(&pool, 120.0).await.unwrap());
        assert_eq!(app::search_dense(&pool, "ice carving valleys", 1).await.unwrap()[0].id, 9007);
        sqlx::query("DELETE FROM docs WHERE id = 9007").execute(&pool).await.unwrap();
    });
}
