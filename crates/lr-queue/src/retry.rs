//! The worker's retry policy, without PostgreSQL: which rows of a failed batch are tried again
//! alone, and how long a table that stalled the worker is left alone. (A failed row's own
//! back-off, 2^attempts seconds up to a minute, and its move to the failed rows after
//! `max_retries` attempts are queue statements: [`crate::Encoding::count_attempt`].)

use std::collections::HashMap;

/// Why a batch could not be encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure<E> {
    /// The model failed on these inputs, or the inference process died running them: another
    /// composition of rows may pass.
    Inputs(E),
    /// It fails whatever the rows are (the model cannot be loaded, say).
    Model(E),
}

/// Encodes `rows` with `encode` (`None`: the worker is stopping): all at once, and when a
/// batch of several rows fails on its inputs, each row alone, so that one bad row fails alone
/// and the others are encoded. A model failure fails every row with its message.
pub fn encode_rows<R, T, E: Clone>(
    rows: &[R],
    mut encode: impl FnMut(&[R]) -> Option<Result<Vec<T>, Failure<E>>>,
) -> Option<Vec<Result<T, E>>> {
    match encode(rows)? {
        Ok(out) => Some(out.into_iter().map(Ok).collect()),
        Err(Failure::Inputs(_)) if rows.len() > 1 => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(match encode(std::slice::from_ref(row))? {
                    Ok(mut one) => Ok(one.remove(0)),
                    Err(Failure::Inputs(e) | Failure::Model(e)) => Err(e),
                });
            }
            Some(out)
        }
        Err(Failure::Inputs(e) | Failure::Model(e)) => Some(rows.iter().map(|_| Err(e.clone())).collect()),
    }
}

/// Seconds a table is left alone after its `stalls`-th stall in a row (its batch ran past the
/// hard deadline and the worker died): 30, doubling, at most an hour.
pub fn stall_pause_seconds(stalls: u32) -> u64 {
    (30u64 << stalls.saturating_sub(1).min(7)).min(3600)
}

/// The tables that stalled the worker: auto-encoding id → (stalls in a row, left alone until
/// this Unix time). Kept by the worker in a file across its restarts (serialised as that map).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stalls {
    pub tables: HashMap<i32, (u32, u64)>,
}

impl Stalls {
    /// Counts a stall of `encoding` at `now`; returns the pause it earned.
    pub fn count(&mut self, encoding: i32, now: u64) -> u64 {
        let entry = self.tables.entry(encoding).or_insert((0, 0));
        entry.0 += 1;
        let pause = stall_pause_seconds(entry.0);
        entry.1 = now + pause;
        pause
    }

    /// True while `encoding` is left alone.
    pub fn skipped(&self, encoding: i32, now: u64) -> bool {
        self.tables.get(&encoding).is_some_and(|(_, until)| *until > now)
    }

    /// A batch of `encoding` ended normally: its stalls are forgotten. True when it had some.
    pub fn clear(&mut self, encoding: i32) -> bool {
        self.tables.remove(&encoding).is_some()
    }
}
