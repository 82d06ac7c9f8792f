//! A SIGBUS guard for memory-mapped query tables.
//!
//! # Why
//!
//! Every PostgreSQL backend keeps its query tables mapped (read-only, `MAP_SHARED`) for the
//! whole session. If the file is truncated while it is mapped — by anyone who can write it,
//! e.g. a role with `pg_write_server_files` running `COPY (SELECT '') TO '<the file>'` — the
//! next read of a page past the new end of file raises SIGBUS. The default action kills the
//! backend, and the postmaster answers a backend killed by a signal by terminating and
//! restarting *every* connection of the cluster. A file operation must never be able to do
//! that, so reads of table mappings are guarded.
//!
//! # How
//!
//! * A process-wide SIGBUS handler is installed once ([`std::sync::Once`]), the first time a
//!   table is mapped. It keeps the action that was installed before it.
//! * Mapped tables are registered in a fixed array of [`MAX_MAPPED_TABLES`] slots made only of
//!   atomics (start, length, damaged flag, in-use flag, and a sequence number so that the
//!   handler never reads a half-written slot). Registering and unregistering take and free a
//!   slot without locks; the handler reads the array without locks or allocation. A full
//!   registry makes opening a table an error, never a crash.
//! * When a fault's address (`si_addr`) lies inside a registered mapping, the handler first
//!   sets that slot's *damaged* flag, then maps anonymous zero pages (`MAP_FIXED |
//!   MAP_PRIVATE | MAP_ANONYMOUS`, `PROT_READ`) from the faulting page to the end of the
//!   mapping, and returns: the faulting load re-executes and reads zeros. Overlaying the rest
//!   of the mapping rather than one page means one signal, not one per page, when a reader
//!   walks a table truncated to nothing (the table is damaged anyway, and nothing of it is
//!   served once the flag is set). If that `mmap` fails it retries with the faulting page
//!   alone; if that fails too the fault is treated as not ours.
//! * Readers check the damaged flag (one atomic load) after reading rows and refuse what they
//!   read: [`crate::LookupEncoder::encode_ids`] returns `LookupError::TableChanged` rather
//!   than a vector made of zeros. Opening a table registers the mapping *before* the header
//!   and checksum are read, so a truncation during that scan fails the open instead of
//!   killing the process.
//! * A fault that is not inside a registered mapping is not ours: a previous handler is
//!   called as it would have been; with no previous handler (SIG_DFL, as in a PostgreSQL
//!   backend, or SIG_IGN) the default action is restored and the handler returns, so the
//!   faulting instruction faults again and the process dies of SIGBUS exactly as it would
//!   have without the guard (a genuine bug still crashes and dumps core). A SIGBUS sent with
//!   `kill` (`si_code <= 0`) is re-raised under the default action the same way.
//! * Unregistering happens before the mapping is unmapped ([`GuardedMap`]'s `Drop`), and the
//!   `munmap` of the whole range also removes the zero-page overlays.
//!
//! The handler uses only async-signal-safe operations: atomic loads and stores, `mmap`,
//! `sigaction`, `raise`, and a call to the previous handler. It preserves `errno`. It is
//! installed with `SA_SIGINFO` (it needs `si_addr`), `SA_ONSTACK` (runs on the thread's
//! alternate signal stack when there is one, e.g. Rust threads') and `SA_RESTART`; not
//! `SA_NODEFER` (it returns normally; a fault inside the handler itself then takes the
//! default action) and not `SA_RESETHAND`.
//!
//! What the guard does not catch: a truncation to a size that is not a multiple of the page
//! size leaves the page holding the new end of file mapped with zeros after it (no fault, no
//! flag), and a write into the file shows through a shared mapping at once. Both change the
//! file's size or timestamps, which [`crate::QueryTable::check_unchanged`] (an `fstat` and a
//! `stat`, meant to be called once per statement, not per row) reports.
//!
//! On targets other than Linux/Android the guard is inert: registration always succeeds and
//! nothing is ever flagged damaged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use memmap2::Mmap;

/// How many table mappings one process can have at once.
pub const MAX_MAPPED_TABLES: usize = 256;

struct Slot {
    /// Seqlock: odd while the slot's range is being written.
    seq: AtomicUsize,
    in_use: AtomicBool,
    start: AtomicUsize,
    /// Page-rounded length; 0 for a free slot.
    len: AtomicUsize,
    damaged: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    seq: AtomicUsize::new(0),
    in_use: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    damaged: AtomicBool::new(false),
};

static SLOTS: [Slot; MAX_MAPPED_TABLES] = [FREE; MAX_MAPPED_TABLES];

/// Why a mapping could not be guarded.
#[derive(Debug)]
pub(crate) enum GuardError {
    /// Every slot is taken.
    Full,
    /// The SIGBUS handler could not be installed.
    Install(std::io::Error),
}

/// A read-only mapping registered with the guard. Dropping it unregisters the range and only
/// then unmaps it (fields drop after `Drop::drop`).
pub(crate) struct GuardedMap {
    map: Mmap,
    slot: usize,
}

impl GuardedMap {
    pub(crate) fn new(map: Mmap) -> Result<Self, GuardError> {
        imp::install()?;
        let slot = register(map.as_ptr() as usize, map.len()).ok_or(GuardError::Full)?;
        Ok(GuardedMap { map, slot })
    }

    /// True once a read of this mapping faulted (the pages from there on read as zeros).
    /// One atomic load; the fence keeps the compiler (and, on weakly ordered CPUs, the
    /// processor) from moving the earlier reads of the mapping after it.
    #[inline]
    pub(crate) fn is_damaged(&self) -> bool {
        std::sync::atomic::fence(Ordering::Acquire);
        SLOTS[self.slot].damaged.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn map(&self) -> &Mmap {
        &self.map
    }
}

impl std::ops::Deref for GuardedMap {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        unregister(self.slot);
        // `self.map` is unmapped after this returns, with its overlays.
    }
}

fn register(start: usize, len: usize) -> Option<usize> {
    let page = imp::page_size();
    let len = len.div_ceil(page) * page;
    for (i, s) in SLOTS.iter().enumerate() {
        if s.in_use.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            s.seq.fetch_add(1, Ordering::AcqRel); // odd: being written
            s.damaged.store(false, Ordering::Relaxed);
            s.start.store(start, Ordering::Relaxed);
            s.len.store(len, Ordering::Relaxed);
            s.seq.fetch_add(1, Ordering::Release); // even: readable
            return Some(i);
        }
    }
    None
}

fn unregister(i: usize) {
    let s = &SLOTS[i];
    s.seq.fetch_add(1, Ordering::AcqRel);
    s.len.store(0, Ordering::Relaxed);
    s.start.store(0, Ordering::Relaxed);
    s.seq.fetch_add(1, Ordering::Release);
    s.in_use.store(false, Ordering::Release);
}

/// The registered range containing `addr`: (slot, start, len). Async-signal-safe.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn lookup(addr: usize) -> Option<(usize, usize, usize)> {
    for (i, s) in SLOTS.iter().enumerate() {
        if !s.in_use.load(Ordering::Acquire) {
            continue;
        }
        let before = s.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            // Being registered or unregistered: a mapping is registered before anything can
            // read it and unregistered only once nothing can, so a fault is never in it.
            continue;
        }
        let start = s.start.load(Ordering::Relaxed);
        let len = s.len.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != before {
            continue;
        }
        if len != 0 && addr >= start && addr - start < len {
            return Some((i, start, len));
        }
    }
    None
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::{lookup, GuardError, SLOTS};
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Once;

    static INSTALL: Once = Once::new();
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    static INSTALL_ERROR: AtomicUsize = AtomicUsize::new(0);
    static PAGE: AtomicUsize = AtomicUsize::new(0);

    /// The action that was installed before ours; written once, before ours is installed.
    struct Prev(UnsafeCell<MaybeUninit<libc::sigaction>>);
    // Safety: written only inside `INSTALL` before `PREV_READY` is set, read only after.
    unsafe impl Sync for Prev {}
    static PREV: Prev = Prev(UnsafeCell::new(MaybeUninit::uninit()));
    static PREV_READY: AtomicBool = AtomicBool::new(false);

    pub(super) fn page_size() -> usize {
        let p = PAGE.load(Ordering::Relaxed);
        if p != 0 {
            return p;
        }
        let p = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        PAGE.store(p, Ordering::Relaxed);
        p
    }

    pub(super) fn install() -> Result<(), GuardError> {
        INSTALL.call_once(|| unsafe {
            page_size();
            let prev = (*PREV.0.get()).as_mut_ptr();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), prev) != 0 {
                INSTALL_ERROR
                    .store(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as usize, Ordering::Relaxed);
                return;
            }
            PREV_READY.store(true, Ordering::Release);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
                INSTALL_ERROR
                    .store(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as usize, Ordering::Relaxed);
                return;
            }
            INSTALLED.store(true, Ordering::Release);
        });
        if INSTALLED.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(GuardError::Install(std::io::Error::from_raw_os_error(INSTALL_ERROR.load(Ordering::Relaxed) as i32)))
        }
    }

    unsafe fn overlay(from: usize, len: usize) -> bool {
        let p = libc::mmap(
            from as *mut libc::c_void,
            len,
            libc::PROT_READ,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        p != libc::MAP_FAILED
    }

    extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        unsafe {
            let errno = *libc::__errno_location();
            handle(sig, info, ctx);
            *libc::__errno_location() = errno;
        }
    }

    unsafe fn handle(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // si_code > 0: raised by the kernel for a fault, so si_addr is meaningful.
        if !info.is_null() && (*info).si_code > 0 {
            let addr = (*info).si_addr() as usize;
            if let Some((slot, start, len)) = lookup(addr) {
                let page = PAGE.load(Ordering::Relaxed);
                let from = addr & !(page - 1);
                // Flag first: whoever reads a zero of the overlay must find the flag set.
                SLOTS[slot].damaged.store(true, Ordering::SeqCst);
                if overlay(from, start + len - from) || overlay(from, page) {
                    return;
                }
            }
        }
        not_ours(sig, info, ctx);
    }

    unsafe fn not_ours(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        if PREV_READY.load(Ordering::Acquire) {
            let prev = &*(*PREV.0.get()).as_ptr();
            let h = prev.sa_sigaction;
            if h != libc::SIG_DFL && h != libc::SIG_IGN {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
                    f(sig);
                }
                return;
            }
            if h == libc::SIG_IGN && (info.is_null() || (*info).si_code <= 0) {
                return; // a sent SIGBUS that was being ignored
            }
        }
        // Default action: restore it and let the fault happen again (or re-raise a sent
        // signal; it is blocked until we return, then delivered under the default action).
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        if info.is_null() || (*info).si_code <= 0 {
            libc::raise(libc::SIGBUS);
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use super::GuardError;

    pub(super) fn page_size() -> usize {
        4096
    }

    pub(super) fn install() -> Result<(), GuardError> {
        Ok(())
    }
}
