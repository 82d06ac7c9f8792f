//! The retry policy: a batch that fails on its inputs is retried row by row (one bad row fails
//! alone), a model failure fails every row, stopping stops; stalls back off 30 s doubling to 1 h.

use lr_queue::retry::{encode_rows, stall_pause_seconds, Failure, Stalls};

/// An encoder that fails on any batch holding "bad" (as an input failure), or always (as a
/// model failure) with `broken`; records the batches it was given.
fn encoder<'a>(calls: &'a mut Vec<Vec<&'static str>>, broken: bool) -> impl FnMut(&[&'static str]) -> Option<Result<Vec<String>, Failure<String>>> + 'a {
    move |rows| {
        calls.push(rows.to_vec());
        if broken {
            return Some(Err(Failure::Model("model missing".to_owned())));
        }
        if rows.contains(&"bad") {
            return Some(Err(Failure::Inputs(format!("cannot encode {}", rows.len()))));
        }
        Some(Ok(rows.iter().map(|r| r.to_uppercase()).collect()))
    }
}

#[test]
fn a_good_batch_is_encoded_in_one_call() {
    let mut calls = Vec::new();
    let out = encode_rows(&["a", "b"], encoder(&mut calls, false)).unwrap();
    assert_eq!(out, vec![Ok("A".to_owned()), Ok("B".to_owned())]);
    assert_eq!(calls, vec![vec!["a", "b"]]);
}

#[test]
fn one_bad_row_fails_alone() {
    let mut calls = Vec::new();
    let out = encode_rows(&["a", "bad", "c"], encoder(&mut calls, false)).unwrap();
    assert_eq!(out, vec![Ok("A".to_owned()), Err("cannot encode 1".to_owned()), Ok("C".to_owned())]);
    assert_eq!(calls, vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]]);
}

#[test]
fn a_single_bad_row_is_not_tried_twice() {
    let mut calls = Vec::new();
    let out = encode_rows(&["bad"], encoder(&mut calls, false)).unwrap();
    assert_eq!(out, vec![Err("cannot encode 1".to_owned())]);
    assert_eq!(calls.len(), 1);
}

#[test]
fn a_model_failure_fails_every_row_without_retrying() {
    let mut calls = Vec::new();
    let out = encode_rows(&["a", "b", "c"], encoder(&mut calls, true)).unwrap();
    assert_eq!(out, vec![Err("model missing".to_owned()); 3]);
    assert_eq!(calls.len(), 1);
}

#[test]
fn stopping_stops_at_once() {
    let mut n = 0;
    let out: Option<Vec<Result<String, String>>> = encode_rows(&["a", "bad", "c"], |rows: &[&str]| {
        n += 1;
        if n == 1 {
            Some(Err(Failure::Inputs(format!("{rows:?}"))))
        } else {
            None
        }
    });
    assert_eq!(out, None);
    assert_eq!(n, 2, "no row after the stop");
}

#[test]
fn stalls_back_off_thirty_seconds_doubling_to_an_hour() {
    let pauses: Vec<u64> = (1..=10).map(stall_pause_seconds).collect();
    assert_eq!(pauses, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    let mut stalls = Stalls::default();
    assert!(!stalls.skipped(7, 1000));
    assert_eq!(stalls.count(7, 1000), 30);
    assert!(stalls.skipped(7, 1029));
    assert!(!stalls.skipped(7, 1030));
    assert!(!stalls.skipped(8, 1001), "other tables go on");
    assert_eq!(stalls.count(7, 1030), 60);
    assert!(stalls.skipped(7, 1089));
    assert!(stalls.clear(7));
    assert!(!stalls.clear(7));
    assert_eq!(stalls.count(7, 2000), 30, "a cleared table starts again at 30 s");
}
