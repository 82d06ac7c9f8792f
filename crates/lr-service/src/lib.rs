//! The encoder service behind lightretriever's background worker: models loaded once per worker
//! and shared by every backend through a Unix socket, with concurrent requests micro-batched.
//!
//! - `protocol` the frames on the socket (JSON requests, binary replies)
//! - `service`  the inference thread, its model cache and queue, the socket front end
//! - `client`   the backend side, with interruptible waits
//! - `process`  the inference process: the service in a child of the worker, whose death does
//!   not reset the PostgreSQL cluster
//!
//! Nothing here touches PostgreSQL: the worker (in the extension crate) owns the socket path,
//! the settings and the database work; threads started here never call into the server.

pub mod client;
pub mod process;
pub mod protocol;
pub mod service;

pub use client::{CallError, Client};
pub use protocol::{Failure, Output, RerankWindow, Reply, Request, Task};
pub use process::{Exit, InferenceProcess};
pub use service::{Models, Service, SPAN_BATCH};

/// Starts a thread with every signal blocked, so that signals sent to the worker process (SIGTERM,
/// SIGHUP, latch wake-ups) are always handled by the PostgreSQL main thread, never by ours.
pub fn spawn_quiet<F: FnOnce() + Send + 'static>(name: &str, f: F) -> std::thread::JoinHandle<()> {
    // SAFETY: plain libc calls on stack-allocated sigset_t values; the old mask is restored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(f).expect("cannot start a thread");
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        handle
    }
}
