//! Table files as a node-local cache of bytes the database holds (WAL-logged chunks, so that
//! replicas, restored dumps and Citus nodes have them): split a file into chunks to store it,
//! write the chunks back as the file (once per node: a lock, a temporary name, one rename), and
//! sweep files no catalog row names any more.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Bytes per stored chunk: large enough that a 1 GB table is a thousand rows, small enough that
/// writing or reading one holds little memory.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Files younger than this are never swept: a build in a transaction that has not committed
/// yet (its catalog row is invisible) or a materialisation under way is still writing them.
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(600);

/// The chunks of the file at `path`, in order, each read when asked for (a 1 GB table is
/// never in memory).
pub fn chunks_of(path: &Path) -> io::Result<impl Iterator<Item = io::Result<Vec<u8>>>> {
    let mut file = File::open(path)?;
    let mut done = false;
    Ok(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        match (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                done = n < CHUNK_BYTES;
                Some(Ok(chunk))
            }
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    }))
}

/// What [`materialize`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// A valid file was there (another process wrote it while this one waited for the lock).
    AlreadyThere,
    /// Written by this call: this many bytes.
    Written(u64),
}

/// Writes the file at `path` from `chunk(0)`, `chunk(1)`, … (until `None`) unless a file that
/// `valid` accepts is there already (a damaged one is replaced). What was written must pass
/// `valid` too before it takes the name: if it does not, nothing changes and the error is
/// `InvalidData` with `valid`'s reason.
///
/// One writer per file at a time: an exclusive `flock` on `<path>.lock`; the others wait,
/// calling `waiting` every 10 ms (where a cancelled query stops waiting, by unwinding). The
/// bytes go to a temporary name first and are renamed into place whole, so a reader never sees a
/// part of a file (nor a damaged file removed: the new one replaces it in one step). Nothing is
/// left behind however the call ends — an error, no chunk at all, or a panic unwinding through
/// it (a cancelled statement): the temporary file is removed on the way out, and temporary
/// files of this path that an earlier writer left (a process killed mid-way) are removed under
/// the lock, where nobody else writes them.
pub fn materialize(
    path: &Path,
    mut waiting: impl FnMut(),
    valid: impl Fn(&Path) -> Result<(), String>,
    mut chunk: impl FnMut(u32) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Materialized> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(lock_name(path))?;
    loop {
        // SAFETY: flock on a descriptor this function owns; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err);
        }
        waiting();
        std::thread::sleep(Duration::from_millis(10));
    }
    if path.exists() && valid(path).is_ok() {
        return Ok(Materialized::AlreadyThere);
    }
    remove_leftovers(path);
    let tmp = Temporary(temporary_name(path));
    let mut out = File::create(&tmp.0)?;
    let mut total = 0u64;
    let mut index = 0u32;
    while let Some(bytes) = chunk(index)? {
        out.write_all(&bytes)?;
        total += bytes.len() as u64;
        index += 1;
    }
    if index == 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no stored chunks"));
    }
    out.sync_all()?;
    valid(&tmp.0).map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
    std::fs::rename(&tmp.0, path)?;
    Ok(Materialized::Written(total))
}

/// The lock file of `path`'s writers.
pub fn lock_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A temporary file, removed when dropped (after a rename there is nothing left to remove).
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes `<path>.tmp-*` (writers of this path that died mid-way; called under its lock).
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A name beside `path` that no other process writes (and that [`sweep`] recognises).
pub fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}-{:x}", std::process::id(), crate::files::build_stamp()));
    PathBuf::from(name)
}

/// Removes the files in `dir` whose names start with `prefix`, are not in `keep` and were last
/// written over [`SWEEP_MIN_AGE`] ago (temporary files of writers that died included). Returns
/// what it removed. Errors (a file already gone) are skipped: another backend swept it.
pub fn sweep(dir: &Path, prefix: &str, keep: &HashSet<String>, min_age: Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || keep.contains(&name) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() >= min_age)
            .unwrap_or(false);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}
