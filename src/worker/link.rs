//! A drain worker's connection to an encoder's inference process. The encoder restarts a dead
//! process; the drain worker reports the crash against the batch (so that a text that kills the
//! model ends in lr_failed_items instead of killing it forever) and reconnects.

use std::time::{Duration, Instant};

use lr_service::{CallError, Client, Request};

use super::limits::stopping;
use super::encoder_status;

pub(super) struct EncoderLink {
    /// The encoder this drain worker prefers (others are tried when it is down).
    index: i32,
    client: Option<Client>,
    /// The encoder connected to, and the inference process serving it then.
    serving: Option<(i32, Option<i64>)>,
}

/// An encoder's status: (inference pid, last exit as "pid how").
fn status(index: i32) -> (Option<i64>, Option<String>) {
    match encoder_status(index) {
        Some(v) => (v["inference_pid"].as_i64(), v["last_exit"].as_str().map(str::to_owned)),
        None => (None, None),
    }
}

impl EncoderLink {
    pub(super) fn new(index: i32) -> EncoderLink {
        EncoderLink { index, client: None, serving: None }
    }

    /// Connected, or connects (to the preferred encoder first); false when none answers.
    pub(super) fn ready(&mut self) -> bool {
        if self.client.is_some() {
            return true;
        }
        match crate::inference::connect_any(self.index) {
            Ok((index, client)) => {
                self.client = Some(client);
                self.serving = Some((index, status(index).0));
                true
            }
            Err(_) => false,
        }
    }

    /// One request; `Err(None)` = the worker is stopping, `Err(Some(why))` = the inference
    /// process ended (or could not be reached) during the call.
    pub(super) fn call(&mut self, request: &Request) -> Result<lr_service::Reply, Option<String>> {
        if !self.ready() {
            return Err(Some("no encoder worker's inference process can be reached".to_owned()));
        }
        let client = self.client.as_mut().expect("ready");
        match client.call(request, || !stopping()) {
            Ok(reply) => Ok(reply),
            Err(CallError::Abandoned) => {
                self.client = None;
                Err(None)
            }
            Err(CallError::Io(_)) => {
                self.client = None;
                Err(Some(self.how_it_ended()))
            }
            Err(e @ CallError::Protocol(_)) => {
                self.client = None;
                Err(Some(e.to_string()))
            }
        }
    }

    /// How the process that was serving ended, as its encoder reports it (briefly awaited).
    fn how_it_ended(&mut self) -> String {
        if let Some((index, Some(pid))) = self.serving.take() {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                if let (_, Some(exit)) = status(index) {
                    if let Some(how) = exit.strip_prefix(&format!("{pid} ")) {
                        return format!("the inference process {how} while encoding");
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "the connection to the inference process broke while encoding".to_owned()
    }
}
