//! PE-Rank against an independent numpy reference (tests/rerank_reference/reference.py, written
//! from the paper, the notes and the public code, not from this crate): the prompt text and ids,
//! the permutation and each pick's score for single windows of 2–20 candidates in both modes,
//! the sliding windows over 25, 30 and 100 candidates; and within Rust, the KV-cache decode
//! against full recomputation and batched windows against one at a time.

use lr_model::Device;
use lr_rerank::{windows, Reranker, RerankerCheckpoint, Window, WindowRanking};
use lr_testkit::{floats, indices, matrix, tiny_models_dir, tiny_reference};
use serde_json::Value;

/// The bound on scores: 5e-5 relative (of the largest score magnitude in the window).
const RELATIVE: f32 = 5e-5;

fn reranker() -> Reranker {
    let checkpoint = RerankerCheckpoint::inspect(&tiny_models_dir().join("pe-rank-tiny")).unwrap();
    Reranker::load(&checkpoint, &Device::Cpu).unwrap()
}




fn texts(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
}

struct Case {
    name: String,
    query: String,
    embeddings: Vec<Vec<f32>>,
    passages: Option<Vec<String>>,
    reference: Value,
}

impl Case {
    fn window(&self) -> Window<'_> {
        Window { query: &self.query, embeddings: &self.embeddings, passages: self.passages.as_deref() }
    }
}

fn cases() -> Vec<Case> {
    let r = tiny_reference("pe-rank-tiny");
    r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let embeddings = matrix(&c["embeddings"]);
            let mode = c["mode"].as_str().unwrap();
            Case {
                name: format!("{mode} n={} {:?}", embeddings.len(), c["query"].as_str().unwrap()),
                query: c["query"].as_str().unwrap().to_owned(),
                embeddings,
                passages: if mode == "text" { texts(&c["passages"]) } else { None },
                reference: c.clone(),
            }
        })
        .collect()
}

fn assert_scores(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= RELATIVE * scale, "{what}: score {k} is {g}, the reference {w} (scale {scale})");
    }
    assert_eq!(got.len(), want.len(), "{what}");
}

fn assert_ranking(got: &WindowRanking, reference: &Value, what: &str) {
    assert_eq!(got.order, indices(&reference["permutation"]), "{what}: permutation");
    assert_scores(&got.scores, &floats(&reference["scores"]), what);
}

#[test]
fn prompts_are_the_reference_text_and_ids() {
    let rr = reranker();
    for case in cases() {
        let prompt = rr.prompt(&case.window()).unwrap();
        assert_eq!(prompt.text, case.reference["prompt_text"].as_str().unwrap(), "{}", case.name);
        let want: Vec<u32> = indices(&case.reference["prompt_ids"]).into_iter().map(|i| i as u32).collect();
        assert_eq!(prompt.ids, want, "{}", case.name);
        assert_eq!(prompt.placeholders, indices(&case.reference["placeholder_positions"]), "{}", case.name);
    }
}

#[test]
fn single_windows_match_the_reference_and_the_kv_cache_matches_recomputation() {
    let rr = reranker();
    let cases = cases();
    let sizes: Vec<usize> = cases.iter().map(|c| c.embeddings.len()).collect();
    assert!(sizes.contains(&2) && sizes.contains(&20), "the reference covers 2 to 20 candidates: {sizes:?}");
    for case in &cases {
        let cached = rr.rank(&[case.window()]).unwrap().remove(0);
        assert_ranking(&cached, &case.reference, &case.name);
        let recomputed = rr.rank_recomputed(&case.window()).unwrap();
        assert_eq!(cached.order, recomputed.order, "{}: KV cache vs recomputation", case.name);
        lr_testkit::assert_within(&cached.scores, &recomputed.scores, 1e-5 * cached.scores.iter().fold(1f32, |m, x| m.max(x.abs())), &case.name);
    }
}

#[test]
fn batched_windows_equal_one_at_a_time() {
    let rr = reranker();
    let cases = cases();
    let windows: Vec<Window> = cases.iter().map(Case::window).collect();
    let together = rr.rank(&windows).unwrap();
    for (case, got) in cases.iter().zip(&together) {
        assert_ranking(got, &case.reference, &format!("{} (batched with {} others)", case.name, cases.len() - 1));
    }
}

/// Windows of one query (as concurrent callers send them) share their prompt up to the first
/// candidate; that prefix runs once for all. Each must rank as it does alone, in both modes and
/// with prompts of different lengths after the prefix.
#[test]
fn windows_of_one_query_batched_equal_one_at_a_time() {
    let rr = reranker();
    let cases = cases();
    for mode_text in [false, true] {
        let case = cases.iter().filter(|c| c.passages.is_some() == mode_text).max_by_key(|c| c.embeddings.len()).unwrap();
        let n = case.embeddings.len();
        assert!(n >= 4, "{}: a window of at least 4 candidates", case.name);
        let reversed: Vec<Vec<f32>> = case.embeddings.iter().rev().cloned().collect();
        let reversed_texts: Option<Vec<String>> = case.passages.as_ref().map(|p| p.iter().rev().cloned().collect());
        let windows = [
            case.window(),
            Window { query: &case.query, embeddings: &reversed, passages: reversed_texts.as_deref() },
            Window { query: &case.query, embeddings: &case.embeddings[..n / 2], passages: case.passages.as_ref().map(|p| &p[..n / 2]) },
            Window { query: &case.query, embeddings: &case.embeddings[2..], passages: case.passages.as_ref().map(|p| &p[2..]) },
        ];
        let together = rr.rank(&windows).unwrap();
        for (i, (w, got)) in windows.iter().zip(&together).enumerate() {
            let alone = rr.rank(std::slice::from_ref(w)).unwrap().remove(0);
            assert_eq!(got.order, alone.order, "{} window {i}: order", case.name);
            let scale = alone.scores.iter().fold(1f32, |m, x| m.max(x.abs()));
            lr_testkit::assert_within(&got.scores, &alone.scores, 1e-5 * scale, &format!("{} window {i}: scores", case.name));
        }
        assert_ranking(&together[0], &case.reference, &format!("{} (batched with windows of its query)", case.name));
    }
}

#[test]
fn sliding_windows_match_the_reference_loop() {
    let rr = reranker();
    let r = tiny_reference("pe-rank-tiny");
    let sliding = r["windows"].as_array().unwrap();
    let sizes: Vec<usize> = sliding.iter().map(|s| s["embeddings"].as_array().unwrap().len()).collect();
    assert!(sizes.contains(&30) && sizes.contains(&100), "{sizes:?}");
    for s in sliding {
        let query = s["query"].as_str().unwrap();
        let embeddings = matrix(&s["embeddings"]);
        let n = embeddings.len();
        let plan: Vec<Vec<usize>> = windows::plan(n, 20, 10).into_iter().map(|w| vec![w.start, w.end]).collect();
        let want_plan: Vec<Vec<usize>> = s["windows"].as_array().unwrap().iter().map(indices).collect();
        assert_eq!(plan, want_plan, "N={n}: windows");
        let ranked = windows::rerank(n, 20, 10, |current| {
            let window: Vec<Vec<f32>> = current.iter().map(|&i| embeddings[i].clone()).collect();
            let got = rr.rank(&[Window { query, embeddings: &window, passages: None }])?.remove(0);
            Ok::<_, lr_model::ModelError>((got.order, got.scores))
        })
        .unwrap();
        let order: Vec<usize> = ranked.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, indices(&s["order"]), "N={n}: final order");
        let want_scores = floats(&s["scores"]);
        let got_scores: Vec<f32> = (0..n).map(|i| ranked.iter().find(|(j, _)| *j == i).unwrap().1).collect();
        assert_scores(&got_scores, &want_scores, &format!("N={n}: scores by original index"));
    }
}
