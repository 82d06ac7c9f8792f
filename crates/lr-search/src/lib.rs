//! Hybrid search fusion (LightRetriever §hybrid): each side's candidate scores are min-max
//! normalised per query, then fused as `w·dense + (1−w)·sparse`. Shared by the extension's
//! `lr_search` and the evaluation harness so both rank exactly the same way. Also the one exact
//! top-k selection every ranking here uses ([`top_k`]).

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dense,
    Sparse,
    Hybrid,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "dense" => Ok(Mode::Dense),
            "sparse" => Ok(Mode::Sparse),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(format!("unknown search mode \"{other}\" (expected dense, sparse or hybrid)")),
        }
    }
}

/// One fused result. The side scores are the raw similarities (inner products), `None` when
/// the document was not among that side's candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: i64,
    pub score: f32,
    pub dense: Option<f32>,
    pub sparse: Option<f32>,
}

/// Min-max normalisation of one side's scores to [0, 1]. When all scores are equal (one
/// candidate, or ties) every candidate gets 1: it is as good as the best of its side.
pub fn min_max(scores: &[(i64, f32)]) -> HashMap<i64, f32> {
    let lo = scores.iter().map(|s| s.1).fold(f32::INFINITY, f32::min);
    let hi = scores.iter().map(|s| s.1).fold(f32::NEG_INFINITY, f32::max);
    let span = hi - lo;
    scores
        .iter()
        .map(|&(id, s)| (id, if span > 0.0 { (s - lo) / span } else { 1.0 }))
        .collect()
}

/// Fuses the candidate lists and returns the best `k`, highest score first (ties: smaller id
/// first, so results are deterministic). A document missing from one side's candidates gets 0
/// for that side — it scored below that side's last candidate.
pub fn fuse(dense: &[(i64, f32)], sparse: &[(i64, f32)], mode: Mode, dense_weight: f32, k: usize) -> Vec<Hit> {
    let raw_dense: HashMap<i64, f32> = dense.iter().copied().collect();
    let raw_sparse: HashMap<i64, f32> = sparse.iter().copied().collect();
    let (nd, ns) = (min_max(dense), min_max(sparse));
    let (wd, ws) = match mode {
        Mode::Dense => (1.0, 0.0),
        Mode::Sparse => (0.0, 1.0),
        Mode::Hybrid => (dense_weight, 1.0 - dense_weight),
    };
    let mut ids: Vec<i64> = Vec::new();
    if wd > 0.0 || mode == Mode::Dense {
        ids.extend(dense.iter().map(|d| d.0));
    }
    if ws > 0.0 || mode == Mode::Sparse {
        ids.extend(sparse.iter().map(|s| s.0));
    }
    ids.sort_unstable();
    ids.dedup();
    let mut hits: Vec<Hit> = ids
        .into_iter()
        .map(|id| Hit {
            id,
            score: wd * nd.get(&id).copied().unwrap_or(0.0) + ws * ns.get(&id).copied().unwrap_or(0.0),
            dense: raw_dense.get(&id).copied(),
            sparse: raw_sparse.get(&id).copied(),
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits.truncate(k);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_fusion() {
        // dense: 1 → 0.9, 2 → 0.5, 3 → 0.1  ⇒ normalised 1, 0.5, 0
        // sparse: 3 → 12, 4 → 8, 1 → 4      ⇒ normalised 1, 0.5, 0
        let dense = [(1, 0.9), (2, 0.5), (3, 0.1)];
        let sparse = [(3, 12.0), (4, 8.0), (1, 4.0)];
        let hits = fuse(&dense, &sparse, Mode::Hybrid, 0.7, 10);
        let got: Vec<(i64, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
        // 1: .7·1 + .3·0 = .7; 2: .7·.5 = .35; 3: .7·0 + .3·1 = .3; 4: .3·.5 = .15
        let want = [(1, 0.7), (2, 0.35), (3, 0.3), (4, 0.15)];
        assert_eq!(got.len(), 4);
        for ((gi, gs), (wi, ws)) in got.iter().zip(want) {
            assert_eq!(*gi, wi);
            assert!((gs - ws).abs() < 1e-6, "{gi}: {gs} vs {ws}");
        }
        assert_eq!(hits[1].sparse, None);
        assert_eq!(hits[3].dense, None);
        assert_eq!(hits[0].dense, Some(0.9));
    }

    #[test]
    fn single_sided_modes_and_k() {
        let dense = [(1, 0.2), (2, 0.8)];
        let sparse = [(3, 1.0)];
        let d = fuse(&dense, &sparse, Mode::Dense, 0.7, 10);
        assert_eq!(d.iter().map(|h| h.id).collect::<Vec<_>>(), [2, 1]);
        let s = fuse(&dense, &sparse, Mode::Sparse, 0.7, 10);
        assert_eq!(s.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>(), [(3, 1.0)]);
        assert_eq!(fuse(&dense, &sparse, Mode::Hybrid, 0.7, 1).len(), 1);
        assert!(fuse(&[], &[], Mode::Hybrid, 0.7, 5).is_empty());
        assert!(Mode::parse("bm25").is_err());
    }

    #[test]
    fn equal_scores_normalise_to_one_and_ties_break_by_id() {
        let n = min_max(&[(5, 0.3), (2, 0.3)]);
        assert_eq!(n[&5], 1.0);
        let hits = fuse(&[(5, 0.3), (2, 0.3)], &[], Mode::Dense, 1.0, 2);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [2, 5]);
    }
}

/// Indices and scores of the `k` best of `scores`, best first; ties broken by the lower index.
/// Scores of exactly zero are kept (a dense score of 0 is a real score).
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, scores[i])).collect()
}
