//! Table files as caches of stored chunks: split, written back whole and once, swept.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use lr_table::cache::{chunks_of, materialize, sweep, Materialized, CHUNK_BYTES, SWEEP_MIN_AGE};

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lr-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn leftovers(d: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.retain(|n| !n.ends_with(".lock"));
    names.sort();
    names
}

#[test]
fn chunks_cover_the_file_in_order() {
    let d = dir("chunks");
    let data = bytes(2 * CHUNK_BYTES + 12345);
    std::fs::write(d.join("t.lrt"), &data).unwrap();
    let chunks: Vec<Vec<u8>> = chunks_of(&d.join("t.lrt")).unwrap().collect::<io::Result<_>>().unwrap();
    assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![CHUNK_BYTES, CHUNK_BYTES, 12345]);
    assert_eq!(chunks.concat(), data);
    // An exact multiple has no empty last chunk; an empty file has none at all.
    std::fs::write(d.join("even"), bytes(CHUNK_BYTES)).unwrap();
    assert_eq!(chunks_of(&d.join("even")).unwrap().count(), 1);
    std::fs::write(d.join("empty"), b"").unwrap();
    assert_eq!(chunks_of(&d.join("empty")).unwrap().count(), 0);
}

#[test]
fn materialized_file_is_the_chunks_and_written_once() {
    let d = dir("write");
    let data = bytes(3 * CHUNK_BYTES / 2);
    let parts: Vec<Vec<u8>> = data.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
    let path = d.join("t.lrt");
    let got = materialize(&path, || {}, |_| Ok(()), |i| Ok(parts.get(i as usize).cloned())).unwrap();
    assert_eq!(got, Materialized::Written(data.len() as u64));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(leftovers(&d), vec!["t.lrt"], "no temporary file is left");
    // Present: nothing is read or written.
    let got = materialize(&path, || {}, |_| Ok(()), |_| panic!("read chunks of a file that exists")).unwrap();
    assert_eq!(got, Materialized::AlreadyThere);
    // Present but damaged: replaced whole, in place.
    std::fs::write(&path, b"not a table").unwrap();
    let got = materialize(&path, || {}, |p| if std::fs::read(p).unwrap() == data { Ok(()) } else { Err("damaged".into()) }, |i| Ok(parts.get(i as usize).cloned())).unwrap();
    assert_eq!(got, Materialized::Written(data.len() as u64));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(leftovers(&d), vec!["t.lrt"]);
}

#[test]
fn a_failed_or_empty_source_leaves_nothing() {
    let d = dir("fail");
    let path = d.join("t.lrt");
    let err = materialize(&path, || {}, |_| Ok(()), |i| if i < 2 { Ok(Some(bytes(100))) } else { Err(io::Error::other("connection lost")) }).unwrap_err();
    assert_eq!(err.to_string(), "connection lost");
    assert_eq!(leftovers(&d), Vec::<String>::new());
    let err = materialize(&path, || {}, |_| Ok(()), |_| Ok(None)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert_eq!(leftovers(&d), Vec::<String>::new());
    // Bytes that do not verify never take the name; a file that was there stays.
    let err = materialize(&path, || {}, |_| Err("checksum mismatch".into()), |i| Ok((i == 0).then(|| bytes(10)))).unwrap_err();
    assert_eq!((err.kind(), err.to_string()), (io::ErrorKind::InvalidData, "checksum mismatch".to_owned()));
    assert_eq!(leftovers(&d), Vec::<String>::new());
    std::fs::write(&path, b"old").unwrap();
    materialize(&path, || {}, |p| if p == path { Err("damaged".into()) } else { Err("also damaged".into()) }, |i| Ok((i == 0).then(|| bytes(10)))).unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(leftovers(&d), vec!["t.lrt"]);
}

#[test]
fn a_writer_that_panics_or_died_leaves_nothing() {
    let d = dir("panic");
    let path = d.join("t.lrt");
    // A cancelled statement unwinds through the chunk source (pgrx turns the ERROR into a panic).
    let unwound = std::panic::catch_unwind(|| {
        let _ = materialize(&path, || {}, |_| Ok(()), |i| if i < 2 { Ok(Some(bytes(1000))) } else { panic!("canceling statement") });
    });
    assert!(unwound.is_err());
    assert_eq!(leftovers(&d), Vec::<String>::new(), "the temporary file went with the unwinding");
    // A writer killed mid-way (no unwinding) left its temporary file: the next writer removes it.
    std::fs::write(d.join("t.lrt.tmp-4242-abc"), b"half").unwrap();
    std::fs::write(d.join("other.lrt.tmp-4242-abc"), b"another file's").unwrap();
    materialize(&path, || {}, |_| Ok(()), |i| Ok((i == 0).then(|| bytes(10)))).unwrap();
    assert_eq!(leftovers(&d), vec!["other.lrt.tmp-4242-abc", "t.lrt"]);
}

#[test]
fn concurrent_writers_write_the_file_once() {
    let d = dir("race");
    let path = d.join("t.lrt");
    let data = bytes(4 * CHUNK_BYTES);
    let reads = AtomicUsize::new(0);
    let waits = AtomicUsize::new(0);
    let results: Vec<Materialized> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    materialize(&path, || { waits.fetch_add(1, Ordering::Relaxed); }, |_| Ok(()), |i| {
                        reads.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20)); // a slow source: the others wait
                        Ok(data.chunks(CHUNK_BYTES).nth(i as usize).map(<[u8]>::to_vec))
                    })
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| matches!(r, Materialized::Written(_))).count(), 1, "{results:?}");
    assert_eq!(reads.load(Ordering::Relaxed), 5, "one writer read the 4 chunks and the end");
    assert!(waits.load(Ordering::Relaxed) > 0, "the others waited, calling back while they did");
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn sweep_removes_only_old_unlisted_files_of_the_prefix() {
    let d = dir("sweep");
    let old = SystemTime::now() - SWEEP_MIN_AGE - Duration::from_secs(5);
    for (name, aged) in [
        ("db5-m-v1.lrt", true),                    // listed: kept
        ("db5-m-v2.lrt", true),                    // unlisted and old: removed
        ("db5-m-v3.lrt.tmp-77-ab", true),          // a dead writer's temporary file: removed
        ("db5-m-v4.lrt", false),                   // unlisted but young (a build not yet committed): kept
        ("db6-m-v1.lrt", true),                    // another database's: kept
    ] {
        let f = std::fs::File::create(d.join(name)).unwrap();
        if aged {
            f.set_modified(old).unwrap();
        }
    }
    let keep: HashSet<String> = ["db5-m-v1.lrt".to_owned()].into();
    let mut removed: Vec<String> =
        sweep(&d, "db5-", &keep, SWEEP_MIN_AGE).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    removed.sort();
    assert_eq!(removed, vec!["db5-m-v2.lrt", "db5-m-v3.lrt.tmp-77-ab"]);
    assert_eq!(leftovers(&d), vec!["db5-m-v1.lrt", "db5-m-v4.lrt", "db6-m-v1.lrt"]);
}
