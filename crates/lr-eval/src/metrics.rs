//! Ranking metrics (trec_eval conventions: linear gains, log2 discount) and min-max fusion.

use std::collections::HashMap;

/// query id → (document id → relevance grade); grades ≤ 0 are not relevant.
pub type Qrels = HashMap<String, HashMap<String, f64>>;
/// query id → ranked (document id, score), best first.
pub type Run = HashMap<String, Vec<(String, f32)>>;

/// nDCG@k with graded relevance: DCG = Σ_{i<k} grade(d_i) / log2(i + 2) over the ranking,
/// normalised by the DCG of the ideal ordering of the judged grades (trec_eval `ndcg_cut`).
/// A query without relevant documents scores 0.
pub fn ndcg_at_k(ranked: &[String], judged: &HashMap<String, f64>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| judged.get(d).copied().unwrap_or(0.0).max(0.0) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<f64> = judged.values().copied().filter(|g| *g > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, g)| g / ((i + 2) as f64).log2()).sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// Fraction of the relevant documents (grade > 0) found in the top k.
pub fn recall_at_k(ranked: &[String], judged: &HashMap<String, f64>, k: usize) -> f64 {
    let relevant = judged.values().filter(|g| **g > 0.0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked.iter().take(k).filter(|d| judged.get(*d).is_some_and(|g| *g > 0.0)).count();
    found as f64 / relevant as f64
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
    pub queries: usize,
}

/// Means over the queries that have judgements; a judged query missing from the run counts 0.
pub fn evaluate(run: &Run, qrels: &Qrels) -> Scores {
    let (mut n, mut r) = (0.0, 0.0);
    for (q, judged) in qrels {
        let ranked: Vec<String> = run.get(q).map(|v| v.iter().map(|(d, _)| d.clone()).collect()).unwrap_or_default();
        n += ndcg_at_k(&ranked, judged, 10);
        r += recall_at_k(&ranked, judged, 100);
    }
    let c = qrels.len().max(1) as f64;
    Scores { ndcg_at_10: n / c, recall_at_100: r / c, queries: qrels.len() }
}

/// Hybrid fusion as in LightRetriever, through the extension's own `lr_search::fuse` so that the
/// harness ranks exactly as `lr_search` does: each side's list (its top 1000) is min-max
/// normalised to [0, 1] (a list whose scores are all equal maps to 1), a document missing from a
/// side gets 0 there, and the fused score is `w·dense + (1 − w)·sparse`. Returns the fused
/// ranking, best first (ties by document id, for determinism).
pub fn min_max_fuse(dense: &[(String, f32)], sparse: &[(String, f32)], dense_weight: f64) -> Vec<(String, f32)> {
    let (dense, sparse) = (&dense[..dense.len().min(1000)], &sparse[..sparse.len().min(1000)]);
    // Integer ids in document-id order, so that lr_search's tie-break (smaller id first) is the
    // document-id order.
    let mut names: Vec<&str> = dense.iter().chain(sparse).map(|(d, _)| d.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let id = |d: &str| names.binary_search(&d).unwrap() as i64;
    let d: Vec<(i64, f32)> = dense.iter().map(|(n, s)| (id(n), *s)).collect();
    let s: Vec<(i64, f32)> = sparse.iter().map(|(n, s)| (id(n), *s)).collect();
    lr_search::fuse(&d, &s, lr_search::Mode::Hybrid, dense_weight as f32, usize::MAX)
        .into_iter()
        .map(|h| (names[h.id as usize].to_string(), h.score))
        .collect()
}
