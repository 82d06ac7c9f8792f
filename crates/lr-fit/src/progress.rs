//! Progress notices, throttled: long calls (table builds, fits) tell the user how far they are
//! every tenth of a stage, not every batch — and at least every `pace` while a stage moves, so
//! that a slow stage is never silent for long.

use std::time::{Duration, Instant};

/// How often a moving stage reports at the least, whatever its fraction.
pub const DEFAULT_PACE: Duration = Duration::from_secs(10);

/// Says when a progress report is due: at each step boundary (`step`, a fraction: 0.1 = every
/// 10%) a stage crosses, once per boundary, and when `pace` has passed since the stage's last
/// report and its fraction has moved; a new stage starts counting afresh.
#[derive(Debug, Clone)]
pub struct Throttle {
    step: f64,
    pace: Duration,
    stage: Option<String>,
    /// The last step boundary reported in this stage (-1: none yet).
    reported: i64,
    /// When this stage last reported (or started), and at what fraction.
    last: (Instant, f64),
}

impl Throttle {
    pub fn new(step: f64) -> Self {
        Throttle::with_pace(step, DEFAULT_PACE)
    }

    pub fn with_pace(step: f64, pace: Duration) -> Self {
        Throttle { step, pace, stage: None, reported: -1, last: (Instant::now(), 0.0) }
    }

    /// True when `fraction` (0..=1) of `stage` has crossed a step boundary not reported yet, or
    /// has moved since a report `pace` ago. The first call of a stage reports only once it
    /// reaches the first boundary (or moves after `pace`).
    pub fn due(&mut self, stage: &str, fraction: f64) -> bool {
        if self.stage.as_deref() != Some(stage) {
            self.stage = Some(stage.to_owned());
            self.reported = 0;
            self.last = (Instant::now(), fraction);
        }
        // Rounded to a millionth first: 0.3 of 0.1-steps is boundary 3, not 2.999…
        let boundary = ((fraction * 1e6).round() as i64) / ((self.step * 1e6).round() as i64).max(1);
        let paced = self.last.0.elapsed() >= self.pace && fraction > self.last.1;
        if boundary > self.reported || paced {
            self.reported = self.reported.max(boundary);
            self.last = (Instant::now(), fraction);
            true
        } else {
            false
        }
    }
}
