//! Sliding windows over a first-stage list, back to front (RankGPT's loop, as PE-Rank evaluates).

use std::ops::Range;

/// The windows run over `n` candidates, in order: the first is the last `window` positions, each
/// next one `step` earlier, until a window that starts at 0 has been ranked.
///
/// For `n` a multiple of `step` with `window = 2·step` (the public evaluation: 20 and 10) this is
/// exactly the public loop: n = 100 gives [80,100) [70,90) … [0,20); n = 30 gives [10,30) [0,20).
/// Where the public loop has quirks this rule is plainer: `n ≤ window` is one window [0, n)
/// (the public loop never reranks n = 10), and n = 25 gives [5,25) [0,15) as it does.
pub fn plan(n: usize, window: usize, step: usize) -> Vec<Range<usize>> {
    assert!(window >= 1 && step >= 1, "window {window} and step {step} must be positive");
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let mut end = n;
    loop {
        let start = end.saturating_sub(window);
        out.push(start..end);
        if start == 0 || end <= step {
            break;
        }
        end -= step;
    }
    out
}

/// A first-stage list reranked window by window: `rank(candidates)` returns, for the candidates
/// of one window in their current order, the permutation (best first) and each pick's score.
/// Returns (original index, score) best first, the score from the last window that placed it.
pub fn rerank<E>(
    n: usize,
    window: usize,
    step: usize,
    mut rank: impl FnMut(&[usize]) -> Result<(Vec<usize>, Vec<f32>), E>,
) -> Result<Vec<(usize, f32)>, E> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut score = vec![f32::NAN; n];
    for w in plan(n, window, step) {
        let current = order[w.clone()].to_vec();
        let (permutation, scores) = rank(&current)?;
        for (k, (&p, &s)) in permutation.iter().zip(&scores).enumerate() {
            order[w.start + k] = current[p];
            score[current[p]] = s;
        }
    }
    Ok(order.into_iter().map(|i| (i, score[i])).collect())
}

/// The window rule's limits, as the SQL functions report them: `(window, step)` when they hold.
pub fn check(window: i64, step: i64) -> Result<(usize, usize), String> {
    if window < 2 {
        return Err(format!("window_size must be at least 2 (it is {window})"));
    }
    if step < 1 {
        return Err(format!("step must be at least 1 (it is {step})"));
    }
    if step > window {
        return Err(format!(
            "step {step} is larger than window_size {window}: candidates between windows would never be reranked"
        ));
    }
    Ok((window as usize, step as usize))
}
