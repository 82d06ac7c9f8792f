//! Progress notices every tenth of a stage: each boundary once, each stage afresh.

use lr_fit::progress::Throttle;

fn reports(throttle: &mut Throttle, stage: &str, fractions: &[f64]) -> Vec<f64> {
    fractions.iter().copied().filter(|&f| throttle.due(stage, f)).collect()
}

#[test]
fn every_tenth_once_and_each_stage_afresh() {
    let mut t = Throttle::new(0.1);
    // A build of 30522 rows in batches of 256: 10%, 20%, …, 100% once each.
    let fractions: Vec<f64> = (1..=120).map(|b| ((b * 256).min(30522) as f64) / 30522.0).collect();
    let got = reports(&mut t, "rows", &fractions);
    let percents: Vec<u64> = got.iter().map(|f| (f * 100.0) as u64).collect();
    assert_eq!(percents, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    // A later stage reports again from its start (a throttle keyed on the last fraction alone
    // would stay silent after a stage that reached 100%).
    assert_eq!(reports(&mut t, "solving", &[0.0, 0.05, 0.1, 0.15, 0.3, 1.0]), vec![0.1, 0.3, 1.0]);
    // Exact boundaries count (0.3 is the third tenth, not 0.2999…).
    let mut t = Throttle::new(0.1);
    assert_eq!(reports(&mut t, "s", &[0.1 + 0.2, 0.3]), vec![0.1 + 0.2]);
}

#[test]
fn nothing_before_the_first_step() {
    let mut t = Throttle::new(0.1);
    assert_eq!(reports(&mut t, "s", &[0.0, 0.01, 0.099]), Vec::<f64>::new());
}

/// A slow stage still reports at a steady pace between its tenths, but only when it moved.
#[test]
fn a_slow_stage_reports_at_the_pace() {
    let pace = std::time::Duration::from_millis(40);
    let mut t = Throttle::with_pace(0.1, pace);
    assert!(!t.due("encoding", 0.01));
    std::thread::sleep(pace + std::time::Duration::from_millis(10));
    assert!(!t.due("encoding", 0.01), "not moved: nothing to say");
    assert!(t.due("encoding", 0.02), "moved after the pace");
    assert!(!t.due("encoding", 0.03), "the pace starts again");
    assert!(t.due("encoding", 0.1), "a boundary reports at once");
}
