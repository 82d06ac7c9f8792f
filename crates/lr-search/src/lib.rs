//! Hybrid search fusion. LightRetriever's (§hybrid): each side's candidate scores are min-max
//! normalised per query, then fused as `w·dense + (1−w)·sparse`; its alternative, reciprocal-rank
//! fusion (k = 60); and z-score fusion ([`Fusion`]). Pseudo-relevance feedback on the dense query
//! ([`rocchio`]). Shared by the extension's `lr_search` and the evaluation harness so both rank
//! exactly the same way. Also the one exact top-k selection every ranking here uses ([`top_k`]).

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
/// Non-finite scores (a stored vector whose product overflows float4) take no part in the
/// range and get 0, the value of a document the side did not retrieve.
pub fn min_max(scores: &[(i64, f32)]) -> HashMap<i64, f32> {
    let finite = || scores.iter().map(|s| s.1).filter(|v| v.is_finite());
    let lo = finite().fold(f32::INFINITY, f32::min);
    let hi = finite().fold(f32::NEG_INFINITY, f32::max);
    let span = hi - lo;
    scores
        .iter()
        .map(|&(id, s)| {
            let v = match s.is_finite() {
                false => 0.0,
                true if span > 0.0 && span.is_finite() => (s - lo) / span,
                // The span of two finite float4 values can overflow float4: then in f64.
                true if span > 0.0 => ((s as f64 - lo as f64) / (hi as f64 - lo as f64)) as f32,
                true => 1.0,
            };
            (id, v)
        })
        .collect()
}

/// How one side's candidate scores are made comparable with the other side's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalisation {
    /// (s − min) / (max − min) over the side's candidates (LightRetriever's); a document that is
    /// not a candidate gets 0.
    MinMax,
    /// (s − mean) / standard deviation over the side's candidates; a document that is not a
    /// candidate gets the side's lowest candidate value. When the candidates' scores do not
    /// spread (one candidate, or all tied) they get 0 and a non-candidate −1, so a lone match
    /// still counts. Non-finite scores (a stored vector that overflows float4) take no part in
    /// the mean and spread and get the non-candidate value.
    ZScore,
    /// Reciprocal rank 1 / (k + rank), rank from 1 (Cormack et al., 2009; LightRetriever's
    /// alternative with k = 60); a document that is not a candidate gets 0, and so does a
    /// non-finite score, which is not ranked.
    Rank { k: f32 },
}

impl Normalisation {
    pub fn parse(s: &str) -> Result<Normalisation, String> {
        match s {
            "minmax" => Ok(Normalisation::MinMax),
            "zscore" => Ok(Normalisation::ZScore),
            "rrf" => Ok(Normalisation::Rank { k: 60.0 }),
            other => Err(format!("unknown fusion \"{other}\" (expected minmax, zscore or rrf)")),
        }
    }

    /// Each candidate's normalised value, and the value of a document that is not a candidate.
    fn apply(self, scores: &[(i64, f32)]) -> (HashMap<i64, f32>, f32) {
        match self {
            Normalisation::MinMax => (min_max(scores), 0.0),
            Normalisation::ZScore => {
                let finite: Vec<f64> = scores.iter().map(|s| s.1 as f64).filter(|v| v.is_finite()).collect();
                let n = finite.len().max(1) as f64;
                let mean = finite.iter().sum::<f64>() / n;
                let sd = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                if !(sd > 0.0 && sd.is_finite()) {
                    let z = scores.iter().map(|&(id, s)| (id, if s.is_finite() { 0.0 } else { -1.0 })).collect();
                    return (z, -1.0);
                }
                let z = |s: f32| ((s as f64 - mean) / sd) as f32;
                let lowest = finite.iter().map(|&v| ((v - mean) / sd) as f32).fold(f32::INFINITY, f32::min);
                (scores.iter().map(|&(id, s)| (id, if s.is_finite() { z(s) } else { lowest })).collect(), lowest)
            }
            Normalisation::Rank { k } => {
                // Ranked by score (ties: lower id first), not by the order rows came in: a scan
                // may return equal scores in any order.
                let mut ranked: Vec<(i64, f32)> = scores.iter().copied().filter(|s| s.1.is_finite()).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut values: HashMap<i64, f32> = scores.iter().map(|&(id, _)| (id, 0.0)).collect();
                for (r, &(id, _)) in ranked.iter().enumerate() {
                    values.insert(id, 1.0 / (k + r as f32 + 1.0));
                }
                (values, 0.0)
            }
        }
    }
}

/// A fusion setting: the normalisation, the dense side's weight `w` (the sparse side gets
/// `1 − w`), and how many of each side's best candidates take part (`depth`; the rest of a
/// side's candidates are treated as not retrieved by it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    pub normalisation: Normalisation,
    pub dense_weight: f32,
    pub depth: usize,
}

impl Fusion {
    /// LightRetriever's published setting: min-max over each side's candidates (lr_search asks
    /// for 1000 per side), 0.7 / 0.3.
    pub const PUBLISHED: Fusion = Fusion { normalisation: Normalisation::MinMax, dense_weight: 0.7, depth: usize::MAX };
    /// `lr_search`'s default (`fusion => 'zscore'`, chosen in docs/quality.md): z-score, 0.7 / 0.3.
    pub const DEFAULT: Fusion = Fusion { normalisation: Normalisation::ZScore, ..Fusion::PUBLISHED };
}

/// Fuses the candidate lists (each best first) with LightRetriever's min-max fusion and returns
/// the best `k`, highest score first (ties: the higher raw dense score, then the higher raw
/// sparse score, of the sides the mode counts, then the smaller id, so results are
/// deterministic). A
/// document missing from one side's candidates gets 0 for that side — it scored below that
/// side's last candidate.
pub fn fuse(dense: &[(i64, f32)], sparse: &[(i64, f32)], mode: Mode, dense_weight: f32, k: usize) -> Vec<Hit> {
    fuse_with(dense, sparse, mode, Fusion { dense_weight, ..Fusion::PUBLISHED }, k)
}

/// [`fuse`] with any [`Fusion`]: only the top `fusion.depth` of each side's candidates (each
/// list best first) are normalised and fused. An id listed twice on a side (a table whose id
/// column is not unique) keeps its first, best, entry (its first finite one, if the first is not).
pub fn fuse_with(dense: &[(i64, f32)], sparse: &[(i64, f32)], mode: Mode, fusion: Fusion, k: usize) -> Vec<Hit> {
    let first_of_each = |side: &[(i64, f32)]| -> Vec<(i64, f32)> {
        // An id's first entry, unless a later one is finite and the first is not (a NaN score
        // can come first). Kept in the list's order, best first.
        let mut kept: HashMap<i64, usize> = HashMap::new();
        for (i, &(id, score)) in side.iter().enumerate() {
            let first = *kept.entry(id).or_insert(i);
            if !side[first].1.is_finite() && score.is_finite() {
                kept.insert(id, i);
            }
        }
        let mut at: Vec<usize> = kept.into_values().collect();
        at.sort_unstable();
        at.into_iter().map(|i| side[i]).take(fusion.depth).collect()
    };
    let (dense, sparse) = (&first_of_each(dense)[..], &first_of_each(sparse)[..]);
    let dense_weight = fusion.dense_weight;
    let raw_dense: HashMap<i64, f32> = dense.iter().copied().collect();
    let raw_sparse: HashMap<i64, f32> = sparse.iter().copied().collect();
    let ((nd, missing_d), (ns, missing_s)) = (fusion.normalisation.apply(dense), fusion.normalisation.apply(sparse));
    let (wd, ws) = match mode {
        Mode::Dense => (1.0, 0.0),
        Mode::Sparse => (0.0, 1.0),
        Mode::Hybrid => (dense_weight, 1.0 - dense_weight),
    };
    // A side the mode counts gives candidates and breaks ties; the other is only reported.
    let (dense_counts, sparse_counts) = fusion.counted_sides(mode);
    let mut ids: Vec<i64> = Vec::new();
    if dense_counts {
        ids.extend(dense.iter().map(|d| d.0));
    }
    if sparse_counts {
        ids.extend(sparse.iter().map(|s| s.0));
    }
    ids.sort_unstable();
    ids.dedup();
    let mut hits: Vec<Hit> = ids
        .into_iter()
        .map(|id| Hit {
            id,
            score: wd * nd.get(&id).copied().unwrap_or(missing_d) + ws * ns.get(&id).copied().unwrap_or(missing_s),
            dense: raw_dense.get(&id).copied(),
            sparse: raw_sparse.get(&id).copied(),
        })
        .collect();
    // Ties of the fused score are broken by the raw side scores, then by id. They are not only
    // exact ties: a side's normalisation can collapse its other candidates to one value (one
    // stored vector of enormous norm makes every other z-score equal in float), and the raw
    // scores still hold their order.
    hits.sort_by(|a, b| best_first(a, b, dense_counts, sparse_counts));
    hits.truncate(k);
    hits
}

/// The order of hits: the higher score first; ties by the higher raw dense score, then the
/// higher raw sparse score (each only where it `counts`; a missing or non-finite one is lowest),
/// then the smaller id.
fn best_first(a: &Hit, b: &Hit, dense_counts: bool, sparse_counts: bool) -> std::cmp::Ordering {
    let raw = |v: Option<f32>, counts: bool| v.filter(|x| counts && x.is_finite()).unwrap_or(f32::NEG_INFINITY);
    b.score
        .total_cmp(&a.score)
        .then(raw(b.dense, dense_counts).total_cmp(&raw(a.dense, dense_counts)))
        .then(raw(b.sparse, sparse_counts).total_cmp(&raw(a.sparse, sparse_counts)))
        .then(a.id.cmp(&b.id))
}

impl Fusion {
    /// Which sides' raw scores break ties in `mode`: those with a weight, and the only side
    /// of a one-sided mode.
    pub fn counted_sides(self, mode: Mode) -> (bool, bool) {
        match mode {
            Mode::Dense => (true, false),
            Mode::Sparse => (false, true),
            Mode::Hybrid => (self.dense_weight > 0.0, self.dense_weight < 1.0),
        }
    }
}

/// `v` in f64.
fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `v` made unit length; None when its length is 0 or not finite.
fn unit(v: Vec<f64>) -> Option<Vec<f64>> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| v.iter().map(|x| x / norm).collect())
}

/// One Rocchio step of pseudo-relevance feedback (Rocchio, 1971; no negative documents): the
/// query vector, made unit length, moved by `weight` toward the mean of the `feedback`
/// documents' vectors, each made unit length first (so no stored vector counts more for being
/// longer), then renormalised. Feedback vectors of another width, zero or non-finite are left
/// out; with none left, or a zero or non-finite result, the query is returned unchanged.
pub fn rocchio(query: &[f32], feedback: &[Vec<f32>], weight: f32) -> Vec<f32> {
    let usable: Vec<Vec<f64>> = feedback.iter().filter(|v| v.len() == query.len()).filter_map(|v| unit(wide(v))).collect();
    let Some(mut moved) = unit(wide(query)) else { return query.to_vec() };
    if usable.is_empty() || weight == 0.0 {
        return query.to_vec();
    }
    let scale = weight as f64 / usable.len() as f64;
    for doc in &usable {
        moved.iter_mut().zip(doc).for_each(|(a, b)| *a += scale * b);
    }
    unit(moved).map_or_else(|| query.to_vec(), |v| v.into_iter().map(|x| x as f32).collect())
}

/// Pseudo-relevance feedback for the dense side: after a first fused ranking, the query vector
/// takes one [`rocchio`] step toward the vectors of its top `documents` hits (0: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback {
    pub documents: usize,
    pub weight: f32,
}

impl Feedback {
    pub const NONE: Feedback = Feedback { documents: 0, weight: 0.0 };
}

/// Score smoothing over the candidates' own graph (the cluster hypothesis; Diaz 2005, score
/// regularisation): the fused ranking's top `documents` hits are reranked by
/// `(f(d) + weight · n(d)) / (1 + weight)`, with `f` the fused score and `n(d)` the mean fused
/// score of d's `neighbours` nearest hits among them (cosine of the stored dense vectors,
/// weighted by it; below 0 counts as 0). A document whose relevant neighbours the ranking also
/// found rises. `documents` 0: none. Hybrid mode only (a side-by-side choice of docs/quality.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    pub documents: usize,
    pub neighbours: usize,
    pub weight: f32,
}

impl Smoothing {
    pub const NONE: Smoothing = Smoothing { documents: 0, neighbours: 0, weight: 0.0 };
    /// `lr_search`'s default (docs/quality.md, "Smoothing over the candidates' graph").
    pub const DEFAULT: Smoothing = Smoothing { documents: 50, neighbours: 10, weight: 0.5 };

    /// Whether a search in `mode` smooths at all.
    pub fn applies(self, mode: Mode) -> bool {
        mode == Mode::Hybrid && self.documents > 1 && self.neighbours > 0 && self.weight != 0.0
    }
}

/// [`Smoothing`] of `hits` (best first), given the stored vectors of some of them (any order;
/// hits without a usable vector neither move nor count as a neighbour). The smoothed score of
/// each of the top hits is a weighted mean of its own fused score and of scores no lower than the
/// last top hit's, so the list stays in descending score order. Ties as in [`fuse_with`]: the
/// higher raw dense score, then the higher raw sparse score (each where `counted`, as
/// [`Fusion::counted_sides`] gives), then the smaller id.
pub fn smooth(hits: &mut [Hit], vectors: &[(i64, Vec<f32>)], smoothing: Smoothing, counted: (bool, bool)) {
    let m = smoothing.documents.min(hits.len());
    let top = &mut hits[..m];
    if m < 2 || top.iter().any(|h| !h.score.is_finite()) {
        return;
    }
    let by_id: HashMap<i64, &Vec<f32>> = vectors.iter().map(|(id, v)| (*id, v)).collect();
    let dims = vectors.first().map_or(0, |v| v.1.len());
    let units: Vec<Option<Vec<f64>>> = top.iter().map(|h| by_id.get(&h.id).filter(|v| v.len() == dims).and_then(|v| unit(wide(v)))).collect();
    // The cosines of every pair with vectors, each product once (the matrix is symmetric).
    let mut cosine = vec![vec![None; m]; m];
    for i in 0..m {
        for j in i + 1..m {
            if let (Some(a), Some(b)) = (&units[i], &units[j]) {
                let c = a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
                (cosine[i][j], cosine[j][i]) = (Some(c), Some(c));
            }
        }
    }
    let fused: Vec<f64> = top.iter().map(|h| h.score as f64).collect();
    let weight = smoothing.weight as f64;
    let mut smoothed = fused.clone();
    for i in (0..m).filter(|&i| units[i].is_some()) {
        let mut near: Vec<(f64, usize)> = cosine[i].iter().enumerate().filter_map(|(j, c)| c.map(|c| (c, j))).collect();
        near.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        near.truncate(smoothing.neighbours);
        let total: f64 = near.iter().map(|&(sim, _)| sim.max(0.0)).sum();
        if total > 0.0 && total.is_finite() {
            let neighbours = near.iter().map(|&(sim, j)| sim.max(0.0) * fused[j]).sum::<f64>() / total;
            smoothed[i] = (fused[i] + weight * neighbours) / (1.0 + weight);
        }
    }
    for (hit, score) in top.iter_mut().zip(smoothed) {
        hit.score = score as f32;
    }
    top.sort_by(|a, b| best_first(a, b, counted.0, counted.1));
}

/// One search: the dense query vector, the sparse side's candidates (computed once by the
/// caller, best first), and how to rank.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub query: &'a [f32],
    pub sparse: &'a [(i64, f32)],
    pub mode: Mode,
    pub fusion: Fusion,
    pub feedback: Feedback,
    pub smoothing: Smoothing,
    pub k: usize,
}

/// lr_search's ranking, whatever stores the vectors: `dense_candidates(q)` gives the dense
/// side's candidates for a query vector (best first), `vectors_of(ids)` the stored dense
/// vectors of some documents (with their ids, any order). With feedback (and a dense side), the
/// first fused ranking's top documents move the query vector, the dense side is searched again
/// with it, and the result is that second fusion. Smoothing then reranks the fused ranking's
/// top documents.
pub fn search<E>(
    request: &Request,
    mut dense_candidates: impl FnMut(&[f32]) -> Result<Vec<(i64, f32)>, E>,
    mut vectors_of: impl FnMut(&[i64]) -> Result<Vec<(i64, Vec<f32>)>, E>,
) -> Result<Vec<Hit>, E> {
    let Request { query, sparse, mode, fusion, feedback, smoothing, k } = *request;
    let smooth_top = if smoothing.applies(mode) { smoothing.documents } else { 0 };
    let dense = if mode == Mode::Sparse { Vec::new() } else { dense_candidates(query)? };
    let use_feedback = mode != Mode::Sparse && feedback.documents > 0 && feedback.weight != 0.0;
    let mut hits = fuse_with(&dense, sparse, mode, fusion, k.max(smooth_top).max(if use_feedback { feedback.documents } else { 0 }));
    if use_feedback && !hits.is_empty() {
        let top: Vec<i64> = hits.iter().take(feedback.documents).map(|h| h.id).collect();
        let vectors: Vec<Vec<f32>> = vectors_of(&top)?.into_iter().map(|(_, v)| v).collect();
        let moved = rocchio(query, &vectors, feedback.weight);
        // Unmoved (the top rows have no usable vector), a second scan would return the first
        // one's candidates.
        if moved != query {
            let dense = dense_candidates(&moved)?;
            hits = fuse_with(&dense, sparse, mode, fusion, k.max(smooth_top));
        }
    }
    if smooth_top > 1 && hits.len() > 1 {
        let top: Vec<i64> = hits.iter().take(smooth_top).map(|h| h.id).collect();
        smooth(&mut hits, &vectors_of(&top)?, smoothing, fusion.counted_sides(mode));
    }
    hits.truncate(k);
    Ok(hits)
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

    fn ids_scores(hits: &[Hit]) -> Vec<(i64, f32)> {
        hits.iter().map(|h| (h.id, h.score)).collect()
    }

    fn assert_close(got: &[(i64, f32)], want: &[(i64, f32)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for ((gi, gs), (wi, ws)) in got.iter().zip(want) {
            assert_eq!(gi, wi, "{got:?} vs {want:?}");
            assert!((gs - ws).abs() < 1e-5, "{gi}: {gs} vs {ws}");
        }
    }

    #[test]
    fn reciprocal_rank_fusion_by_hand() {
        // dense ranks 1, 2, 3 = ids 1, 2, 3; sparse ranks 1, 2, 3 = ids 3, 4, 1.
        let dense = [(1, 0.9), (2, 0.5), (3, 0.1)];
        let sparse = [(3, 12.0), (4, 8.0), (1, 4.0)];
        let rrf = Fusion { normalisation: Normalisation::Rank { k: 60.0 }, dense_weight: 0.5, depth: usize::MAX };
        let got = ids_scores(&fuse_with(&dense, &sparse, Mode::Hybrid, rrf, 10));
        // 1: .5/61 + .5/63; 3: .5/63 + .5/61; 2: .5/62; 4: .5/62 — ties by the raw dense score.
        let (a, b) = (0.5 / 61.0 + 0.5 / 63.0, 0.5 / 62.0);
        assert_close(&got, &[(1, a), (3, a), (2, b), (4, b)]);
    }

    #[test]
    fn z_score_fusion_by_hand() {
        // dense 3, 2, 1 → mean 2, sd √(2/3): z = ±1.2247, 0; sparse 10, 0 → z = ±1.
        let dense = [(1, 3.0), (2, 2.0), (3, 1.0)];
        let sparse = [(4, 10.0), (3, 0.0)];
        let z = Fusion { normalisation: Normalisation::ZScore, dense_weight: 0.5, depth: usize::MAX };
        let got = ids_scores(&fuse_with(&dense, &sparse, Mode::Hybrid, z, 10));
        let zd = 1.0 / (2.0f32 / 3.0).sqrt();
        // missing: dense side's lowest is −zd (for 4), sparse side's lowest is −1 (for 1 and 2).
        let want = [(4, 0.5 * -zd + 0.5), (1, 0.5 * zd - 0.5), (2, -0.5), (3, 0.5 * -zd - 0.5)];
        let mut want = want.to_vec();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_close(&got, &want);
    }

    #[test]
    fn a_lone_or_tied_z_score_match_still_counts() {
        // One sparse hit: it gets 0, a row the sparse side did not retrieve −1.
        let dense = [(1, 3.0), (2, 2.0), (3, 1.0)];
        let z = Fusion { normalisation: Normalisation::ZScore, dense_weight: 0.5, depth: usize::MAX };
        let got = ids_scores(&fuse_with(&dense, &[(3, 5.0)], Mode::Hybrid, z, 10));
        let zd = 1.0 / (2.0f32 / 3.0).sqrt();
        let mut want = vec![(1, 0.5 * zd - 0.5), (2, -0.5), (3, -0.5 * zd)];
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_close(&got, &want);
        // A non-finite score (a stored vector overflowing float4) is left out of the statistics.
        let got = ids_scores(&fuse_with(&[(1, f32::INFINITY), (2, 2.0), (3, 1.0)], &[], Mode::Dense, z, 10));
        assert_close(&got, &[(2, 1.0), (3, -1.0), (1, -1.0)]); // 1 ties with the lowest, and its raw score ranks below
        let all_bad = fuse_with(&[(1, f32::NAN)], &[], Mode::Dense, z, 10);
        assert_eq!(all_bad[0].score, -1.0);
    }

    #[test]
    fn duplicate_ids_keep_their_best_entry_and_rrf_ranks_by_score() {
        // id 2 twice on the dense side: its first (best) entry counts, the second is gone.
        let got = fuse(&[(1, 0.9), (2, 0.5), (2, 0.1), (3, 0.4)], &[], Mode::Dense, 1.0, 10);
        assert_close(&ids_scores(&got), &[(1, 1.0), (2, 0.2), (3, 0.0)]);
        // Rows tied on score, in any order: reciprocal ranks follow (score, id), not arrival.
        let rrf = Fusion { normalisation: Normalisation::Rank { k: 60.0 }, dense_weight: 1.0, depth: usize::MAX };
        let a = fuse_with(&[(5, 0.5), (4, 0.5), (6, 0.9)], &[], Mode::Dense, rrf, 10);
        let b = fuse_with(&[(6, 0.9), (4, 0.5), (5, 0.5)], &[], Mode::Dense, rrf, 10);
        assert_eq!(a, b);
        assert_close(&ids_scores(&a), &[(6, 1.0 / 61.0), (4, 1.0 / 62.0), (5, 1.0 / 63.0)]);
    }

    #[test]
    fn depth_cuts_each_side_before_normalising() {
        // depth 2: dense keeps 1, 2 (normalised 1, 0), sparse keeps 3, 4 (1, 0); 1 and 3 lose
        // their other side's contribution.
        let dense = [(1, 0.9), (2, 0.5), (3, 0.1)];
        let sparse = [(3, 12.0), (4, 8.0), (1, 4.0)];
        let cut = Fusion { depth: 2, ..Fusion::PUBLISHED };
        let got = ids_scores(&fuse_with(&dense, &sparse, Mode::Hybrid, cut, 10));
        assert_close(&got, &[(1, 0.7), (3, 0.3), (2, 0.0), (4, 0.0)]);
        assert_eq!(fuse(&dense, &sparse, Mode::Hybrid, 0.7, 10), fuse_with(&dense, &sparse, Mode::Hybrid, Fusion::PUBLISHED, 10));
        assert!(Normalisation::parse("borda").is_err());
        assert_eq!(Normalisation::parse("rrf"), Ok(Normalisation::Rank { k: 60.0 }));
    }

    #[test]
    fn rocchio_by_hand() {
        // q = (1, 0); feedback mean = (0, 1); weight 1 → (1, 1)/√2.
        let q = rocchio(&[1.0, 0.0], &[vec![0.0, 2.0], vec![0.0, 0.0]], 1.0);
        let h = 1.0 / 2.0f32.sqrt();
        assert!((q[0] - h).abs() < 1e-6 && (q[1] - h).abs() < 1e-6, "{q:?}");
        assert_eq!(rocchio(&[1.0, 0.0], &[], 1.0), vec![1.0, 0.0]);
        assert_eq!(rocchio(&[1.0, 0.0], &[vec![0.0, 1.0]], 0.0), vec![1.0, 0.0]);
        // moving exactly opposite cancels the query: unchanged rather than NaN.
        assert_eq!(rocchio(&[1.0, 0.0], &[vec![-1.0, 0.0]], 1.0), vec![1.0, 0.0]);
        // A long stored vector counts as much as a unit one; zero, NaN and other widths not at all.
        let long = rocchio(&[1.0, 0.0], &[vec![0.0, 1000.0], vec![0.0, 0.0], vec![f32::NAN, 1.0], vec![1.0]], 1.0);
        assert!((long[0] - h).abs() < 1e-6 && (long[1] - h).abs() < 1e-6, "{long:?}");
    }

    /// A request for the query (1, 0) with the published fusion.
    fn request(sparse: &[(i64, f32)], mode: Mode, feedback: Feedback, k: usize) -> Request<'_> {
        Request { query: &[1.0, 0.0], sparse, mode, fusion: Fusion::PUBLISHED, feedback, smoothing: Smoothing::NONE, k }
    }

    /// Both sides' raw scores break ties (hybrid with both weights above 0).
    const BOTH: (bool, bool) = (true, true);

    fn hit(id: i64, score: f32) -> Hit {
        Hit { id, score, dense: None, sparse: None }
    }

    #[test]
    fn smoothing_by_hand() {
        // 1 and 3 point the same way, 2 and 4 the other; one neighbour each, weight 0.5:
        // 1: (1 + .5·.75)/1.5, 3: (.75 + .5·1)/1.5, 2: (.8 + .5·.1)/1.5, 4: (.1 + .5·.8)/1.5.
        let vectors = vec![(1, vec![1.0, 0.0]), (2, vec![0.0, 1.0]), (3, vec![1.0, 0.1]), (4, vec![0.0, 2.0])];
        let fused = vec![hit(1, 1.0), hit(2, 0.8), hit(3, 0.75), hit(4, 0.1)];
        let one = Smoothing { documents: 4, neighbours: 1, weight: 0.5 };
        let mut hits = fused.clone();
        smooth(&mut hits, &vectors, one, BOTH);
        assert_close(&ids_scores(&hits), &[(1, 1.375 / 1.5), (3, 1.25 / 1.5), (2, 0.85 / 1.5), (4, 0.5 / 1.5)]);
        // Only the top 3 move, among themselves: 2's nearest is then 3 (cosine 0.0995 > 0).
        let mut hits = fused.clone();
        smooth(&mut hits, &vectors, Smoothing { documents: 3, ..one }, BOTH);
        assert_close(&ids_scores(&hits), &[(1, 1.375 / 1.5), (3, 1.25 / 1.5), (2, 1.175 / 1.5), (4, 0.1)]);
        // Two neighbours, weighted by cosine: 4's are 2 (cosine 1) and 3 (0.0995).
        let mut hits = fused.clone();
        smooth(&mut hits, &vectors, Smoothing { neighbours: 2, ..one }, BOTH);
        let c = 0.1 / 1.01f64.sqrt();
        let n4 = (0.8 + c * 0.75) / (1.0 + c);
        assert!((hits.iter().find(|h| h.id == 4).unwrap().score as f64 - (0.1 + 0.5 * n4) / 1.5).abs() < 1e-6);
        // A hit without a vector (1) keeps its score and is nobody's neighbour: 3's nearest is
        // then 2 (tied with 4 at cosine 0.0995; the earlier hit first).
        let mut hits = fused.clone();
        smooth(&mut hits, &vectors[1..], one, BOTH);
        assert_close(&ids_scores(&hits), &[(1, 1.0), (3, 1.15 / 1.5), (2, 0.85 / 1.5), (4, 0.5 / 1.5)]);
        // Nothing to smooth: one hit, no vectors, a non-finite fused score.
        let mut hits = vec![hit(1, 1.0)];
        smooth(&mut hits, &vectors, one, BOTH);
        assert_eq!(ids_scores(&hits), [(1, 1.0)]);
        let mut hits = fused.clone();
        smooth(&mut hits, &[], one, BOTH);
        assert_eq!(hits, fused);
        let mut hits = vec![hit(1, f32::NAN), hit(2, 0.5)];
        smooth(&mut hits, &vectors, one, BOTH);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 2]);
        // Smoothed ties go by the raw dense score, then the raw sparse score, then id: 1 and 3
        // are each other's only neighbour at weight 1, so both get (1 + .75)/2.
        let tied_counting = |dense: [Option<f32>; 2], sparse: [Option<f32>; 2], counted: (bool, bool)| {
            let mut hits = vec![
                Hit { dense: dense[0], sparse: sparse[0], ..hit(1, 1.0) },
                Hit { dense: dense[1], sparse: sparse[1], ..hit(3, 0.75) },
            ];
            smooth(&mut hits, &[(1, vec![1.0, 0.0]), (3, vec![1.0, 0.1])], Smoothing { documents: 2, neighbours: 1, weight: 1.0 }, counted);
            assert_eq!(hits[0].score, hits[1].score);
            hits.iter().map(|h| h.id).collect::<Vec<_>>()
        };
        let tied = |dense, sparse| tied_counting(dense, sparse, BOTH);
        assert_eq!(tied([Some(0.1), Some(0.2)], [None, None]), [3, 1]);
        assert_eq!(tied([Some(0.2), Some(0.2)], [Some(1.0), Some(2.0)]), [3, 1]);
        assert_eq!(tied([None, None], [Some(2.0), None]), [1, 3]);
        assert_eq!(tied([None, None], [None, None]), [1, 3]);
        // A side without weight does not break ties (dense_weight 1: the sparse scores are
        // not counted, so id decides; dense_weight 0: the dense ones).
        let dense_only = Fusion { dense_weight: 1.0, ..Fusion::PUBLISHED }.counted_sides(Mode::Hybrid);
        assert_eq!(tied_counting([Some(0.2), Some(0.2)], [Some(1.0), Some(2.0)], dense_only), [1, 3]);
        let sparse_only = Fusion { dense_weight: 0.0, ..Fusion::PUBLISHED }.counted_sides(Mode::Hybrid);
        assert_eq!(tied_counting([Some(0.1), Some(0.2)], [None, None], sparse_only), [1, 3]);
        assert_eq!(tied_counting([Some(0.1), Some(0.2)], [Some(2.0), Some(1.0)], sparse_only), [1, 3]);
        assert_eq!(tied_counting([Some(0.1), Some(0.2)], [Some(1.0), Some(2.0)], sparse_only), [3, 1]);
    }

    #[test]
    fn smoothing_keeps_scores_in_descending_order() {
        // Whatever the vectors, every smoothed score lies between the top's lowest fused score
        // and its highest: the hits below the top stay below.
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for _ in 0..50 {
            let mut hits: Vec<Hit> = (0..30).map(|i| hit(i, 0.0)).collect();
            let mut scores: Vec<f32> = (0..30).map(|_| next()).collect();
            scores.sort_by(|a, b| b.total_cmp(a));
            hits.iter_mut().zip(&scores).for_each(|(h, s)| h.score = *s);
            let vectors: Vec<(i64, Vec<f32>)> = (0..30).map(|i| (i, (0..4).map(|_| next()).collect())).collect();
            smooth(&mut hits, &vectors, Smoothing { documents: 20, neighbours: 5, weight: 1.0 }, BOTH);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "{:?}", ids_scores(&hits));
            let mut ids: Vec<i64> = hits.iter().map(|h| h.id).collect();
            ids.sort_unstable();
            assert_eq!(ids, (0..30).collect::<Vec<_>>());
        }
    }

    #[test]
    fn search_smooths_the_hybrid_top_only() {
        // Fused (published): 1 .7, 4 .6125, 2 .35, 3 .3. Vectors: 3 like 1, 4 like 2. One
        // neighbour, weight 1: 1 and 3 (.7 + .3)/2 = .5, 4 and 2 (.6125 + .35)/2: 3 passes 4.
        let docs: Vec<(i64, Vec<f32>)> = vec![(1, vec![1.0, 0.0]), (2, vec![0.0, 1.0]), (3, vec![1.0, 0.1]), (4, vec![0.1, 1.0])];
        let scan = |_: &[f32]| -> Result<Vec<(i64, f32)>, ()> { Ok(vec![(1, 0.9), (4, 0.8), (2, 0.5), (3, 0.1)]) };
        let asked = std::cell::Cell::new(0);
        let vectors = |ids: &[i64]| -> Result<Vec<(i64, Vec<f32>)>, ()> {
            asked.set(asked.get() + 1);
            Ok(docs.iter().filter(|d| ids.contains(&d.0)).cloned().collect())
        };
        let sparse = [(3, 5.0), (2, 4.0)];
        let plain = search(&request(&sparse, Mode::Hybrid, Feedback::NONE, 4), scan, vectors).unwrap();
        assert_eq!(asked.get(), 0);
        let smoothing = Smoothing { documents: 4, neighbours: 1, weight: 1.0 };
        let smoothed = search(&Request { smoothing, ..request(&sparse, Mode::Hybrid, Feedback::NONE, 2) }, scan, vectors).unwrap();
        assert_eq!(asked.get(), 1);
        let mut want = plain.clone();
        smooth(&mut want, &docs, smoothing, BOTH);
        want.truncate(2);
        assert_eq!(smoothed, want, "k = 2 still smooths over the top 4");
        assert_eq!(plain.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 4, 2, 3]);
        assert_close(&ids_scores(&smoothed), &[(1, 0.5), (3, 0.5)]);
        // Dense and sparse modes are not smoothed and fetch no vectors.
        for mode in [Mode::Dense, Mode::Sparse] {
            let got = search(&Request { smoothing, ..request(&sparse, mode, Feedback::NONE, 4) }, scan, vectors).unwrap();
            assert_eq!(got, search(&request(&sparse, mode, Feedback::NONE, 4), scan, vectors).unwrap());
        }
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn feedback_searches_again_with_the_moved_query() {
        // Unit vectors at 0°, −45°, 44°, 60°; the query is (1, 0): first ranking 1, 3, 2, 4.
        let at = |deg: f32| vec![deg.to_radians().cos(), deg.to_radians().sin()];
        let docs: Vec<(i64, Vec<f32>)> = vec![(1, at(0.0)), (2, at(-45.0)), (3, at(44.0)), (4, at(60.0))];
        let scan = |q: &[f32]| -> Result<Vec<(i64, f32)>, ()> {
            let mut s: Vec<(i64, f32)> = docs.iter().map(|(id, v)| (*id, v[0] * q[0] + v[1] * q[1])).collect();
            s.sort_by(|a, b| b.1.total_cmp(&a.1));
            Ok(s)
        };
        let vectors = |ids: &[i64]| -> Result<Vec<(i64, Vec<f32>)>, ()> { Ok(ids.iter().map(|i| docs[*i as usize - 1].clone()).collect()) };
        let plain = search(&request(&[], Mode::Dense, Feedback::NONE, 4), scan, vectors).unwrap();
        assert_eq!(plain.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3, 2, 4]);
        // Feedback from 1 and 3 turns the query to ≈ 10.6°: 4 (49.4° away) passes 2 (55.6°).
        let fb = Feedback { documents: 2, weight: 1.0 };
        let moved = search(&request(&[], Mode::Dense, fb, 4), scan, vectors).unwrap();
        assert_eq!(moved.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3, 4, 2]);
        let q2 = rocchio(&[1.0, 0.0], &[at(0.0), at(44.0)], 1.0);
        assert!((q2[1].atan2(q2[0]).to_degrees() - 10.6).abs() < 0.1, "{q2:?}");
        assert!((moved[2].dense.unwrap() - (q2[0] * docs[3].1[0] + q2[1] * docs[3].1[1])).abs() < 1e-6, "raw scores are q'·d");
        // Sparse mode never moves anything and never asks for vectors.
        let never = |_: &[i64]| -> Result<Vec<(i64, Vec<f32>)>, ()> { panic!("no vectors in sparse mode") };
        let sparse = search(&request(&[(7, 1.0)], Mode::Sparse, fb, 3), scan, never).unwrap();
        assert_eq!(sparse.iter().map(|h| h.id).collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn one_enormous_score_keeps_the_others_in_order() {
        // A stored vector of norm ~1e29 scores ~1e28: every other z-score is the same float, and
        // every other min-max value is near 0. The raw scores keep their order in dense mode.
        let dense = [(9, 1.0e28), (1, 0.2), (3, 0.9), (2, 0.5)];
        for normalisation in [Normalisation::ZScore, Normalisation::MinMax, Normalisation::Rank { k: 60.0 }] {
            let fusion = Fusion { normalisation, ..Fusion::DEFAULT };
            let hits = fuse_with(&dense, &[], Mode::Dense, fusion, 4);
            assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [9, 3, 2, 1], "{normalisation:?}");
        }
    }

    #[test]
    fn non_finite_scores_count_as_not_retrieved_in_every_fusion() {
        // +inf and NaN (products that overflow float4) rank with the documents a side did not
        // retrieve, under every normalisation, and leave the others' values as if absent.
        let dense = [(7, f32::INFINITY), (1, 0.9), (8, f32::NAN), (2, 0.5), (3, 0.1)];
        let clean = [(1, 0.9), (2, 0.5), (3, 0.1)];
        for normalisation in [Normalisation::ZScore, Normalisation::MinMax, Normalisation::Rank { k: 60.0 }] {
            let (values, missing) = normalisation.apply(&dense);
            let (want, _) = normalisation.apply(&clean);
            for (id, v) in &want {
                assert_eq!(values[id], *v, "{normalisation:?} id {id}");
            }
            for id in [7, 8] {
                assert!(values[&id] <= missing, "{normalisation:?} id {id}: {} above {missing}", values[&id]);
            }
            let fusion = Fusion { normalisation, ..Fusion::DEFAULT };
            let hits = fuse_with(&dense, &[], Mode::Dense, fusion, 5);
            assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 2, 3, 7, 8], "{normalisation:?}");
            assert!(hits.iter().all(|h| h.score.is_finite()), "{normalisation:?}: {hits:?}");
        }
        // The span of two finite float4 scores may overflow float4; min-max still orders them.
        let wide = min_max(&[(1, 3.0e38), (2, -3.0e38), (3, 0.0)]);
        assert_eq!((wide[&1], wide[&2]), (1.0, 0.0));
        assert!((wide[&3] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_duplicate_id_keeps_a_finite_entry_and_ties_ignore_a_side_that_does_not_count() {
        // id 5 first as NaN (a positive NaN sorts above +inf), then finite: the finite one counts.
        let dense = [(5, f32::NAN), (1, 0.9), (5, 0.8), (2, 0.1)];
        let hits = fuse_with(&dense, &[], Mode::Dense, Fusion::DEFAULT, 3);
        assert_eq!(hits.iter().map(|h| (h.id, h.dense)).collect::<Vec<_>>(), [(1, Some(0.9)), (5, Some(0.8)), (2, Some(0.1))]);
        // Sparse mode: 3 and 4 tie on the sparse side; the dense side, not counted, does not
        // break the tie (the id does), as lr_search, which passes no dense list, ranks them.
        let sparse = [(3, 2.0), (4, 2.0), (6, 1.0)];
        let hits = fuse_with(&[(4, 0.9), (3, 0.1)], &sparse, Mode::Sparse, Fusion::DEFAULT, 3);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [3, 4, 6]);
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
