//! Progress notices, throttled: long calls (table builds, fits) tell the user how far they are
//! every tenth of a stage, not every batch.

/// Says when a progress report is due: at each step boundary (`step`, a fraction: 0.1 = every
/// 10%) a stage crosses, once per boundary; a new stage starts counting afresh.
#[derive(Debug, Clone)]
pub struct Throttle {
    step: f64,
    stage: Option<String>,
    /// The last step boundary reported in this stage (-1: none yet).
    reported: i64,
}

impl Throttle {
    pub fn new(step: f64) -> Self {
        Throttle { step, stage: None, reported: -1 }
    }

    /// True when `fraction` (0..=1) of `stage` has crossed a step boundary not reported yet.
    /// The first call of a stage reports only once it reaches the first boundary.
    pub fn due(&mut self, stage: &str, fraction: f64) -> bool {
        if self.stage.as_deref() != Some(stage) {
            self.stage = Some(stage.to_owned());
            self.reported = 0;
        }
        // Rounded to a millionth first: 0.3 of 0.1-steps is boundary 3, not 2.999…
        let boundary = ((fraction * 1e6).round() as i64) / ((self.step * 1e6).round() as i64).max(1);
        if boundary > self.reported {
            self.reported = boundary;
            true
        } else {
            false
        }
    }
}
