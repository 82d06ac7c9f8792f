//! Time of the unseen-row map at decoder widths, and the longest stretch without a progress
//! call (where the extension checks for cancellation). Synthetic rows: D + 512 fitted rows and
//! as many unseen as the first argument says (default 2,048; a decoder's table has ~150k).
use std::time::Instant;

fn main() {
    let unseen: usize = std::env::args().nth(1).map_or(2048, |a| a.parse().expect("unseen rows"));
    for d in [1024usize, 2048, 4096] {
        let seen = d + 512;
        let vocab = seen + unseen;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let prior: Vec<f32> = (0..vocab * d).map(|_| next()).collect();
        let mut rows: Vec<f32> = prior.iter().map(|v| 1.5 * v + 0.01 * next()).collect();
        let trained: Vec<bool> = (0..vocab).map(|t| t < seen).collect();
        let started = Instant::now();
        let mut last = Instant::now();
        let mut longest = 0.0f64;
        let mut calls = 0;
        lr_fit::map_unseen_rows_with_progress(&prior, &mut rows, &trained, d, &mut |_, _| {
            longest = longest.max(last.elapsed().as_secs_f64());
            last = Instant::now();
            calls += 1;
        })
        .unwrap();
        longest = longest.max(last.elapsed().as_secs_f64());
        println!(
            "D = {d}: {:.2} s, {calls} progress calls, longest stretch without one {:.2} s",
            started.elapsed().as_secs_f64(),
            longest
        );
    }
}
