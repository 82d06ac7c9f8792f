//! The rerank path through the worker (issue 13): the tiny random PE-Rank checkpoint loaded once
//! in the encoder worker; concurrent reranks from 8 backends give the orders and scores of one
//! at a time (and of the independent numpy reference); statement_timeout cancels a long rerank
//! and leaves the session usable; `lr_search(..., rerank => n)` reranks its top n hits as
//! `lr_rerank` does.

use lr_e2e::*;
use postgres::Client;

const DB: &str = "lr_e2e_rerank";

fn register(c: &mut Client, name: &str, dir: &str) {
    let path = tiny_models_dir().join(dir).to_string_lossy().into_owned();
    c.execute("SELECT lightretriever.lr_register_model($1, $2)", &[&name, &path]).unwrap();
}

fn vector_literal(v: &[f32]) -> String {
    format!("[{}]", v.iter().map(|x| format!("{x:e}")).collect::<Vec<_>>().join(","))
}

fn array_literal(embeddings: &[Vec<f32>]) -> String {
    format!("ARRAY[{}]::vector[]", embeddings.iter().map(|e| format!("'{}'", vector_literal(e))).collect::<Vec<_>>().join(","))
}

/// Every reference list: the single windows in embedding mode and the sliding 30 and 100.
fn lists() -> Vec<(String, Vec<Vec<f32>>)> {
    let r = tiny_reference("pe-rank-tiny");
    let mut out: Vec<(String, Vec<Vec<f32>>)> = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["mode"] == "embedding")
        .map(|c| (c["query"].as_str().unwrap().to_owned(), matrix(&c["embeddings"])))
        .collect();
    for s in r["windows"].as_array().unwrap() {
        out.push((s["query"].as_str().unwrap().to_owned(), matrix(&s["embeddings"])));
    }
    out
}

fn rerank(c: &mut Client, query: &str, embeddings: &[Vec<f32>]) -> Vec<(i32, f32)> {
    let sql = format!("SELECT idx, score FROM lightretriever.lr_rerank_embeddings($1, {}, 'perank') ORDER BY rank", array_literal(embeddings));
    c.query(&sql, &[&query]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The id of candidate `i` (0-based) of list `list` in the `candidates` table.
fn candidate_id(list: usize, i: usize) -> i64 {
    (list * 1000 + i + 1) as i64
}

/// `lr_rerank` of list `list` from the `candidates` table, as (1-based position, score).
fn rerank_rows(c: &mut Client, list: usize, query: &str, n: usize) -> Vec<(i32, f32)> {
    let ids: Vec<i64> = (0..n).map(|i| candidate_id(list, i)).collect();
    c.query("SELECT id, score FROM lightretriever.lr_rerank($1, $2, 'candidates', 'perank') ORDER BY rank", &[&query, &ids])
        .unwrap()
        .iter()
        .map(|r| ((r.get::<_, i64>(0) - candidate_id(list, 0) + 1) as i32, r.get(1)))
        .collect()
}

fn assert_same(got: &[(i32, f32)], want: &[(i32, f32)], what: &str) {
    let order = |v: &[(i32, f32)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(order(got), order(want), "{what}: order");
    let scale = want.iter().fold(1e-6f32, |m, r| m.max(r.1.abs()));
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() <= 5e-5 * scale, "{what}: score {} vs {}", g.1, w.1);
    }
}

#[test]
fn eight_concurrent_reranks_equal_one_at_a_time_and_a_timeout_cancels() {
    let mut c = fresh_database(DB);
    register(&mut c, "perank", "pe-rank-tiny");
    let lists = lists();
    assert!(lists.len() >= 8, "{} lists", lists.len());
    // One at a time, and against the reference for the sliding 100 (9 windows).
    let alone: Vec<Vec<(i32, f32)>> = lists.iter().map(|(q, e)| rerank(&mut c, q, e)).collect();
    let r = tiny_reference("pe-rank-tiny");
    let s100 = r["windows"].as_array().unwrap().iter().find(|s| s["embeddings"].as_array().unwrap().len() == 100).unwrap();
    let scores: Vec<f32> = s100["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let want: Vec<(i32, f32)> =
        s100["order"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).map(|i| (i as i32 + 1, scores[i])).collect();
    let got100 = &alone[lists.iter().position(|(_, e)| e.len() == 100).unwrap()];
    assert_same(got100, &want, "N=100 through the worker vs the reference");

    // The same lists as table rows, reranked by id: the reranker (no encoder) reads the
    // table's only vector(32) column.
    c.batch_execute("CREATE TABLE candidates (id bigint PRIMARY KEY, emb vector(32))").unwrap();
    for (list, (_, embeddings)) in lists.iter().enumerate() {
        for (i, e) in embeddings.iter().enumerate() {
            c.execute("INSERT INTO candidates VALUES ($1, $2::text::vector)", &[&candidate_id(list, i), &vector_literal(e)]).unwrap();
        }
    }
    for (list, (q, e)) in lists.iter().enumerate() {
        assert_same(&rerank_rows(&mut c, list, q, e.len()), &alone[list], &format!("lr_rerank of list {list}"));
    }

    // 8 backends at once, each through all the lists (in a different order) with lr_rerank:
    // the worker runs their windows together; the answers do not change.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let lists = lists.clone();
            std::thread::spawn(move || {
                let mut c = fresh_connection(DB);
                let mut out = vec![Vec::new(); lists.len()];
                for k in 0..lists.len() {
                    let i = (k + t) % lists.len();
                    out[i] = rerank_rows(&mut c, i, &lists[i].0, lists[i].1.len());
                }
                out
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let together = h.join().unwrap();
        for (i, got) in together.iter().enumerate() {
            assert_same(got, &alone[i], &format!("caller {t}, list {i} ({} candidates)", lists[i].1.len()));
        }
    }

    // Ten reranks of 81 windows each (step 1) take far longer than 300 ms (one alone sometimes
    // finished within it on an idle machine): the statement is cancelled, the session and the
    // worker go on.
    let long = format!(
        "SET statement_timeout = '300ms'; SELECT count(*) FROM generate_series(1, 10) g,
           LATERAL lightretriever.lr_rerank_embeddings('q' || g, {}, 'perank', step => 1)",
        array_literal(&lists.iter().find(|(_, e)| e.len() == 100).unwrap().1)
    );
    let started = std::time::Instant::now();
    let e = c.batch_execute(&long).expect_err("a timeout");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "cancelled after {:?}", started.elapsed());
    c.batch_execute("RESET statement_timeout").unwrap();
    assert_same(&rerank(&mut c, &lists[0].0, &lists[0].1), &alone[0], "after the cancel");
}

#[test]
fn search_reranks_its_top_hits_as_lr_rerank_does() {
    let mut c = fresh_database("lr_e2e_rerank_search");
    register(&mut c, "perank", "pe-rank-tiny");
    register(&mut c, "tl", "tiny-llama");
    let r = tiny_reference("pe-rank-tiny");
    let s30 = r["windows"].as_array().unwrap().iter().find(|s| s["embeddings"].as_array().unwrap().len() == 30).unwrap();
    let embeddings = matrix(&s30["embeddings"]);
    c.batch_execute(
        "SELECT lightretriever.lr_build_query_table('tl');
         CREATE TABLE docs (id bigint PRIMARY KEY, body text, emb vector(64), pe vector(32))",
    )
    .unwrap();
    let words = ["the river", "a city of music", "engines and rivers", "the library", "paris in france", "old books"];
    for (i, e) in embeddings.iter().enumerate() {
        let body = format!("{} {}", words[i % words.len()], words[(i / words.len()) % words.len()]);
        c.execute(
            "INSERT INTO docs VALUES ($1, $2, lightretriever.lr_encode_document($2, 'tl'), $3::text::vector)",
            &[&(i as i64 + 1), &body, &vector_literal(e)],
        )
        .unwrap();
    }
    let search = |c: &mut Client, rerank: i32| -> Vec<(i64, f32, Option<f32>)> {
        c.query(
            "SELECT id, score, rerank_score FROM lightretriever.lr_search('docs', 'the river library', k => 10, mode => 'dense',
                    model => 'tl', dense_column => 'emb', rerank => $1, rerank_model => 'perank')",
            &[&rerank],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let plain = search(&mut c, 0);
    assert_eq!(plain.len(), 10);
    assert!(plain.iter().all(|r| r.2.is_none()));
    let reranked = search(&mut c, 8);
    let top: Vec<i64> = plain.iter().take(8).map(|r| r.0).collect();
    // The reranker without an encoder reads the table's only vector(32) column.
    let by_rerank: Vec<(i64, f32)> = c
        .query("SELECT id, score FROM lightretriever.lr_rerank('the river library', $1, 'docs', 'perank') ORDER BY rank", &[&top])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(reranked.len(), 10);
    for (k, (id, _, score)) in reranked.iter().take(8).enumerate() {
        assert_eq!(*id, by_rerank[k].0, "rank {}: {reranked:?} vs {by_rerank:?}", k + 1);
        assert!((score.unwrap() - by_rerank[k].1).abs() <= 1e-5 * by_rerank[k].1.abs().max(1.0));
    }
    assert_eq!(&reranked[8..], &plain[8..], "the hits after the reranked ones keep their order and scores");
    let mut first: Vec<i64> = reranked.iter().take(8).map(|r| r.0).collect();
    first.sort();
    let mut want = top.clone();
    want.sort();
    assert_eq!(first, want, "the reranked rows are the top 8 hits");
}
