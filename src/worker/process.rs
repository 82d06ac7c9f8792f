//! The encoder worker's inference process: forked, watched, restarted.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lr_service::{Exit, InferenceProcess};
use pgrx::prelude::*;


use super::status_path;

/// The worker's inference process: started, watched, restarted.
pub(super) struct Inference {
    pub(super) index: i32,
    listener: UnixListener,
    device: String,
    process: Option<InferenceProcess>,
    restarts: u32,
    last_exit: Option<String>,
    /// Not before this instant (a process that keeps dying at start is restarted at most every
    /// few seconds).
    next_start: Instant,
}

pub(super) extern "C-unwind" fn on_sigchld(_: i32) {
    // Async-signal-safe: wakes the main loop, which reaps and restarts.
    unsafe { pg_sys::SetLatch(pg_sys::MyLatch) };
}

impl Inference {
    pub(super) fn start(index: i32, listener: UnixListener) -> Inference {
        let mut inference = Inference {
            index,
            listener,
            device: crate::guc::device_spec(),
            process: None,
            restarts: 0,
            last_exit: None,
            next_start: Instant::now(),
        };
        inference.ensure_running();
        inference
    }

    /// Forks the inference process if none runs (the worker has no threads of its own, so
    /// forking is safe).
    pub(super) fn spawn(&mut self) {
        let title = c"inference process";
        match InferenceProcess::spawn(&self.listener, &self.device, crate::guc::max_batch(), || unsafe {
            pg_sys::set_ps_display(title.as_ptr())
        }) {
            Ok(p) => {
                pgrx::log!("lightretriever encoder {}: inference process {} started (device {})", self.index, p.pid(), self.device);
                self.process = Some(p);
            }
            Err(e) => pgrx::warning!("lightretriever encoder {}: cannot start the inference process: {e}", self.index),
        }
        self.write_status();
    }

    /// Reaps a dead inference process (saying how it ended) and starts a new one.
    pub(super) fn ensure_running(&mut self) -> Option<Exit> {
        let exit = self.process.as_ref().and_then(InferenceProcess::try_wait);
        if let Some(e) = exit {
            let pid = self.process.take().map(|p| p.pid()).unwrap_or_default();
            pgrx::log!("lightretriever encoder {}: inference process {pid} {e}; starting another", self.index);
            self.last_exit = Some(format!("{pid} {e}"));
            self.restarts += 1;
        }
        if self.process.is_none() && Instant::now() >= self.next_start {
            self.next_start = Instant::now() + Duration::from_secs(1);
            self.spawn();
        }
        exit
    }

    /// A new device (SIGHUP): the process is restarted on it (models move on next use).
    pub(super) fn set_device(&mut self, device: String) {
        if device != self.device {
            self.device = device;
            if let Some(p) = self.process.take() {
                p.stop(Duration::from_secs(5));
            }
            self.spawn();
        }
    }

    pub(super) fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(status_path(self.index));
    }

    pub(super) fn write_status(&self) {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let status = serde_json::json!({
            "worker": self.index,
            "worker_pid": unsafe { pg_sys::MyProcPid },
            "inference_pid": self.process.as_ref().map(InferenceProcess::pid),
            "restarts": self.restarts,
            "started_at": started,
            "last_exit": self.last_exit,
            "device": self.device,
        });
        let path = status_path(self.index);
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, status.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}
