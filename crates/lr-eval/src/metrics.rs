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

/// Hybrid fusion as in LightRetriever: each side's list (its top 1000) is min-max normalised to
/// [0, 1] (a list whose scores are all equal maps to 1), a document missing from a side gets 0
/// there, and the fused score is `w·dense + (1 − w)·sparse`. Returns the fused ranking, best first
/// (ties by document id, for determinism).
pub fn min_max_fuse(dense: &[(String, f32)], sparse: &[(String, f32)], dense_weight: f64) -> Vec<(String, f32)> {
    fn normalised(list: &[(String, f32)]) -> HashMap<&str, f64> {
        let list = &list[..list.len().min(1000)];
        let max = list.iter().map(|x| x.1 as f64).fold(f64::NEG_INFINITY, f64::max);
        let min = list.iter().map(|x| x.1 as f64).fold(f64::INFINITY, f64::min);
        list.iter()
            .map(|(d, s)| (d.as_str(), if max > min { (*s as f64 - min) / (max - min) } else { 1.0 }))
            .collect()
    }
    let (nd, ns) = (normalised(dense), normalised(sparse));
    let mut fused: HashMap<&str, f64> = HashMap::new();
    for (d, s) in &nd {
        *fused.entry(d).or_default() += dense_weight * s;
    }
    for (d, s) in &ns {
        *fused.entry(d).or_default() += (1.0 - dense_weight) * s;
    }
    let mut out: Vec<(String, f32)> = fused.into_iter().map(|(d, s)| (d.to_string(), s as f32)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}
