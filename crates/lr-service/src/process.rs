//! The inference process: the encoder service runs in a child of the background worker, not in
//! the worker itself.
//!
//! Why: the worker is a PostgreSQL process attached to shared memory. When such a process dies
//! of a signal (a segfault in model code, the OOM killer on a huge document, a CUDA fault, a
//! SIGKILL), the postmaster resets every connection of the cluster. A child that the worker
//! forks is invisible to the postmaster: its death costs a retried batch, nothing more.
//!
//! The child is cut loose from PostgreSQL before it runs any model code: it gets its own session
//! (the postmaster's signals to the worker's process group do not reach it), default signal
//! dispositions, no inherited file descriptors but the listening socket and stdout/stderr, no
//! shared mappings (PostgreSQL's shared memory and DSM segments are unmapped, so a wild write in
//! model code cannot corrupt them), death with its parent (PR_SET_PDEATHSIG), and the highest
//! OOM score (the kernel kills it, not a backend). It never returns into the parent's code: it
//! ends with `_exit`.
//!
//! Fork only from a parent that has started no threads and no thread pool (rayon, which candle
//! and tokenizers use): the child inherits a pool's bookkeeping but none of its threads, and
//! its first model run would wait forever. The background worker runs no model code itself.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use crate::service::Service;

/// A running inference process.
#[derive(Debug)]
pub struct InferenceProcess {
    pid: libc::pid_t,
    started: Instant,
}

/// How a child ended, as `waitpid` told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "was killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "signal",
    }
}

impl InferenceProcess {
    /// Forks the inference process serving `listener`. `in_child` runs first in the child (e.g.
    /// to set the process title), before the child lets go of the parent's resources; it must
    /// not touch shared memory or take locks.
    pub fn spawn(listener: &UnixListener, device: &str, max_batch: usize, in_child: impl FnOnce()) -> io::Result<Self> {
        let parent = unsafe { libc::getpid() };
        let keep = listener.as_raw_fd();
        // SAFETY: the caller is single-threaded (documented), so the child's copy of the
        // address space is consistent; the child never returns from this block.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                in_child();
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    detach_from_parent(parent, keep);
                    // SAFETY: `keep` is the inherited listening socket, open in this process.
                    let listener = unsafe { <UnixListener as std::os::fd::FromRawFd>::from_raw_fd(keep) };
                    let service = Service::start(device, max_batch);
                    service.serve(listener);
                    loop {
                        // SAFETY: plain libc call; signals end the process (default dispositions).
                        unsafe { libc::pause() };
                    }
                }))
                .map_or(70, |()| 0);
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            pid => Ok(InferenceProcess { pid, started: Instant::now() }),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How long it has run.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// `Some(how)` once the child has ended (it is reaped then).
    pub fn try_wait(&self) -> Option<Exit> {
        let mut status = 0;
        // SAFETY: plain libc call on our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == self.pid {
            Some(decode(status))
        } else if r == -1 {
            // Reaped elsewhere or never ours: treat as gone.
            Some(Exit::Code(-1))
        } else {
            None
        }
    }

    /// Ends the child (SIGTERM, then SIGKILL after `grace`) and reaps it.
    pub fn stop(self, grace: Duration) -> Exit {
        // SAFETY: plain libc calls on our own child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        loop {
            if let Some(e) = self.try_wait() {
                return e;
            }
            if Instant::now() >= deadline {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                let mut status = 0;
                unsafe { libc::waitpid(self.pid, &mut status, 0) };
                return decode(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn decode(status: i32) -> Exit {
    if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }
}

/// In the child: everything that ties it to the parent's server goes.
fn detach_from_parent(parent: libc::pid_t, keep: i32) {
    std::panic::set_hook(Box::new(|info| eprintln!("lightretriever inference process: {info}")));
    // SAFETY: plain libc calls in the freshly forked, single-threaded child.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0); // the parent died before PDEATHSIG was armed
        }
        libc::setsid();
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // A closed client connection must be a write error, not the end of the process; the
        // parent's cancel and reload signals are not for this process.
        for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    close_inherited_fds(keep);
    unmap_shared_memory();
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
}

fn close_inherited_fds(keep: i32) {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for fd in fds {
        if fd > 2 && fd != keep {
            // SAFETY: closing descriptors this process inherited and will never use.
            unsafe { libc::close(fd) };
        }
    }
}

/// Unmaps every shared mapping ('s' in /proc/self/maps): the parent's shared memory and DSM
/// segments, which this process must never write.
fn unmap_shared_memory() {
    for (start, end) in shared_mappings() {
        // SAFETY: nothing in this process refers to the parent's shared mappings.
        unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
    }
}

/// `(start, end)` of the shared mappings of this process.
pub fn shared_mappings() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            if !perms.ends_with('s') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
        })
        .collect()
}
