//! The SIGBUS guard and change detection: a table file truncated, replaced, removed or
//! modified while mapped never crashes the process and is never served silently.
//!
//! Tests that must observe a process dying (a genuine SIGBUS) or that restrict system calls
//! (seccomp) re-run this test binary as a child with `LR_TABLE_GUARD_CHILD` set.

use lr_table::{
    Dtype, Expected, LookupEncoder, LookupError, QueryTable, TableError, TableMeta, TableWriter, HEADER_ALIGN,
};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHILD: &str = "LR_TABLE_GUARD_CHILD";

fn tmpdir(name: &str) -> PathBuf {
    lr_testkit::temp_dir("lr-table-guard", name)
}

fn meta() -> TableMeta {
    TableMeta {
        model: "m".into(),
        instruction: Some("Given a query, retrieve".into()),
        tokenizer_fingerprint: "abc".into(),
        build: serde_json::json!({"method": "test"}),
    }
}

/// Five rows (the word tokenizer's vocabulary) of 4096 f32: each row is 16 KiB, four pages,
/// so a truncation to the header leaves every row past the end of file.
const ROWS: usize = 5;
const DIMS: usize = 4096;

fn rows_of(seed: u32) -> Vec<f32> {
    (0..ROWS * DIMS).map(|i| ((i as f32 + seed as f32 * 0.1) * 0.37).sin() + 0.01).collect()
}

fn write_table(path: &Path, seed: u32, m: &TableMeta) -> u64 {
    let mut w = TableWriter::create(path, m, ROWS as u64, DIMS as u32, Dtype::F32).unwrap();
    w.write_rows(&rows_of(seed)).unwrap();
    w.finish().unwrap()
}

/// The normalised sum of `ids`' rows, computed from the known values, not from the table.
fn expected(ids: &[u32], seed: u32) -> Vec<f32> {
    let rows = rows_of(seed);
    let mut acc = vec![0.0f64; DIMS];
    for &id in ids {
        for (a, v) in acc.iter_mut().zip(&rows[id as usize * DIMS..(id as usize + 1) * DIMS]) {
            *a += *v as f64;
        }
    }
    let n = acc.iter().map(|v| v * v).sum::<f64>().sqrt();
    acc.iter().map(|v| (v / n) as f32).collect()
}

fn close_to(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

fn word_tokenizer(d: &Path) -> lr_tokenizer::Tokenizer {
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "far": 4}, "unk_token": "[UNK]"}
    });
    let p = d.join("tokenizer.json");
    std::fs::write(&p, json.to_string()).unwrap();
    lr_tokenizer::load_tokenizer(&p, None).unwrap()
}

fn encoder(d: &Path, p: &Path) -> LookupEncoder {
    LookupEncoder::new(QueryTable::open(p).unwrap(), word_tokenizer(d))
}

fn truncate(p: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len).unwrap();
}

fn changed_reason(r: Result<(), TableError>) -> String {
    match r {
        Err(e @ TableError::Changed { .. }) => {
            let TableError::Changed { reason, .. } = &e else { unreachable!() };
            let shown = e.to_string();
            assert!(shown.contains("changed since it was opened") && shown.contains("re-opened"), "{shown}");
            reason.clone()
        }
        other => panic!("expected TableError::Changed, got {other:?}"),
    }
}

fn is_table_changed(r: &Result<Vec<f32>, LookupError>) -> bool {
    matches!(r, Err(LookupError::TableChanged(m)) if m.contains("changed since it was opened"))
}

#[test]
fn truncated_while_mapped_is_refused_not_fatal() {
    let d = tmpdir("truncate");
    let p = d.join("t.lrt");
    write_table(&p, 0, &meta());
    let enc = encoder(&d, &p);
    let ids = [1u32, 2, 3, 2];
    let good = enc.encode_ids(&ids).unwrap();
    assert!(close_to(&good, &expected(&ids, 0)));
    assert!(!enc.table().is_damaged());
    enc.check_unchanged().unwrap();

    truncate(&p, HEADER_ALIGN as u64);
    // Without the guard this read is a SIGBUS and the test binary dies.
    let r = enc.encode_ids(&ids);
    assert!(is_table_changed(&r), "{r:?}");
    assert!(enc.table().is_damaged());
    assert!(changed_reason(enc.check_unchanged()).contains("truncated to 4096 bytes"));
    // Plain reads of the damaged table do not crash either: they read zeros.
    assert_eq!(enc.table().row(4), vec![0.0; DIMS]);
    assert!(is_table_changed(&enc.encode("a b")));

    truncate(&p, 0);
    assert!(is_table_changed(&enc.encode_ids(&[0, 4])));
    assert!(enc.table().row(0).iter().all(|v| *v == 0.0));
    assert!(changed_reason(enc.table().check_unchanged()).contains("truncated to 0 bytes"));
    // Re-opening the truncated file is a plain error.
    assert!(matches!(QueryTable::open(&p), Err(TableError::Corrupt { .. })));
}

#[test]
fn truncated_between_open_and_first_read() {
    let d = tmpdir("truncate-early");
    let p = d.join("t.lrt");
    write_table(&p, 1, &meta());
    let enc = encoder(&d, &p);
    truncate(&p, 0);
    assert!(!enc.table().is_damaged(), "nothing was read yet");
    assert!(changed_reason(enc.check_unchanged()).contains("truncated to 0 bytes"));
    let r = enc.encode_ids(&[3]);
    assert!(is_table_changed(&r), "{r:?}");
    assert!(enc.table().is_damaged());
    // A table with weights reads its weights past the end too.
    let q = d.join("w.lrt");
    let mut w = TableWriter::create(&q, &meta(), ROWS as u64, DIMS as u32, Dtype::F16).unwrap();
    w.write_rows(&rows_of(1)).unwrap();
    w.write_weights(&[1.0, 2.0, 0.5, 1.0, 3.0]).unwrap();
    w.finish().unwrap();
    let t = QueryTable::open(&q).unwrap();
    truncate(&q, HEADER_ALIGN as u64);
    assert_eq!(t.weight(4), 0.0);
    assert!(t.is_damaged());
    assert!(changed_reason(t.check_unchanged()).contains("truncated to 4096 bytes"));
}

#[test]
fn truncation_while_another_thread_reads_never_yields_a_wrong_vector() {
    let d = tmpdir("truncate-race");
    // Page-aligned sizes: the header only, nothing, and the header plus rows 0 and 1.
    for (round, cut) in [HEADER_ALIGN, 0, HEADER_ALIGN + 2 * DIMS * 4].into_iter().enumerate() {
        let p = d.join(format!("t{round}.lrt"));
        write_table(&p, 2, &meta());
        let enc = std::sync::Arc::new(encoder(&d, &p));
        let queries: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![0, 1], vec![4, 4, 2]];
        let wanted: Vec<Vec<f32>> = queries.iter().map(|q| expected(q, 2)).collect();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = {
            let (enc, started) = (enc.clone(), started.clone());
            std::thread::spawn(move || {
                let (mut good, mut refused) = (0usize, 0usize);
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut i = 0;
                // Read on until the damage shows (a few rounds after), or time runs out.
                while refused < 10 && Instant::now() < deadline {
                    let k = i % queries.len();
                    match enc.encode_ids(&queries[k]) {
                        Ok(v) => {
                            assert!(close_to(&v, &wanted[k]), "a wrong vector was served for {:?}", queries[k]);
                            good += 1;
                        }
                        Err(LookupError::TableChanged(_)) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                    i += 1;
                    started.store(i, std::sync::atomic::Ordering::Relaxed);
                }
                (good, refused)
            })
        };
        while started.load(std::sync::atomic::Ordering::Relaxed) < 50 {
            std::thread::yield_now();
        }
        truncate(&p, cut as u64);
        let (good, refused) = reader.join().expect("the reader survives");
        assert!(good >= 50, "{good}");
        assert!(refused > 0, "the truncation to {cut} was never noticed");
        assert!(enc.table().is_damaged());
        assert!(changed_reason(enc.check_unchanged()).contains(&format!("truncated to {cut} bytes")));
    }
}

#[test]
fn truncation_during_open_is_an_error_not_a_crash() {
    // A bigger table (8 MiB) so that the checksum scan takes a while; another thread keeps
    // replacing it with a fresh copy and truncating that copy in place.
    let d = tmpdir("truncate-open");
    let p = d.join("t.lrt");
    let big_rows = 512usize;
    let values: Vec<f32> = (0..big_rows * DIMS).map(|i| (i as f32 * 0.01).cos()).collect();
    let build = |to: &Path| {
        let mut w = TableWriter::create(to, &meta(), big_rows as u64, DIMS as u32, Dtype::F32).unwrap();
        w.write_rows(&values).unwrap();
        w.finish().unwrap()
    };
    let checksum = build(&p);
    // The pristine copy exists before the vandal starts copying it.
    std::fs::copy(&p, d.join("pristine.lrt")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vandal = {
        let (p, stop, d) = (p.clone(), stop.clone(), d.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let fresh = d.join("fresh.lrt");
                std::fs::copy(d.join("pristine.lrt"), &fresh).unwrap();
                std::fs::rename(&fresh, &p).unwrap();
                std::thread::sleep(Duration::from_micros(200 + (n % 7) as u64 * 300));
                truncate(&p, (HEADER_ALIGN * (1 + (n as usize % 3) * 300)) as u64);
                n += 1;
            }
        })
    };
    let (mut ok, mut refused, mut faulted) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match QueryTable::open(&p) {
            Ok(t) => {
                ok += 1;
                assert_eq!(t.checksum(), checksum);
                // Opened whole; it may be truncated right after, so a read is right or flagged.
                let row = t.row(big_rows - 1);
                assert!(t.is_damaged() || row == values[(big_rows - 1) * DIMS..]);
            }
            Err(TableError::Corrupt { reason, .. }) if reason.contains("faulted while verifying") => faulted += 1,
            Err(TableError::Corrupt { .. } | TableError::Changed { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    vandal.join().unwrap();
    // How many opens were cut short by a fault during the checksum scan depends on timing.
    eprintln!("opened {ok}, refused {refused}, of which a read fault during verification {faulted}");
    assert!(ok + refused + faulted > 0);
}

#[test]
fn replaced_removed_and_modified_files_are_reported() {
    let d = tmpdir("changed");
    let p = d.join("t.lrt");
    write_table(&p, 3, &meta());

    // Replaced: a new valid table renamed over the path.
    let t = QueryTable::open(&p).unwrap();
    t.check_unchanged().unwrap();
    write_table(&d.join("other.lrt"), 4, &meta());
    std::fs::rename(d.join("other.lrt"), &p).unwrap();
    assert_eq!(changed_reason(t.check_unchanged()), "replaced");
    // The old mapping still reads the old file (it was not damaged, only superseded).
    assert_eq!(t.row(1), rows_of(3)[DIMS..2 * DIMS].to_vec());
    assert!(!t.is_damaged());
    drop(t);

    // Removed.
    let enc = encoder(&d, &p);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(changed_reason(enc.check_unchanged()), "removed");
    drop(enc);

    // Modified in place with an ordinary write of one byte, same size. The change is seen
    // through the file's change/modification time (with nanoseconds); the kernel stamps
    // those from a coarse clock (one tick, a few ms), so wait more than a tick first.
    write_table(&p, 3, &meta());
    let t = QueryTable::open(&p).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let at = HEADER_ALIGN as u64 + 8;
    let byte = std::fs::read(&p).unwrap()[at as usize];
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte ^ 0x55]).unwrap();
    drop(f);
    assert!(changed_reason(t.check_unchanged()).starts_with("modified in place"));
    assert!(!t.is_damaged());
    // Growing the file is a modification too.
    let t = QueryTable::open(&p).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(t.contains("data checksum"), "{t}");
    write_table(&p, 3, &meta());
    let t = QueryTable::open(&p).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    truncate(&p, len + 4096);
    let reason = changed_reason(t.check_unchanged());
    assert!(reason.starts_with("modified in place") && reason.contains("bytes"), "{reason}");
}

#[test]
fn verify_against_compares_with_the_catalog() {
    let d = tmpdir("verify");
    let p = d.join("t.lrt");
    let checksum = write_table(&p, 5, &meta());
    let t = QueryTable::open(&p).unwrap();
    let right = Expected {
        checksum,
        model: "m".into(),
        instruction: Some("Given a query, retrieve".into()),
        rows: ROWS,
        dims: DIMS,
    };
    t.verify_against(&right).unwrap();
    let refused = |e: Expected, what: &str| match t.verify_against(&e) {
        Err(TableError::Corrupt { reason, .. }) => assert!(reason.contains(what), "{reason}"),
        other => panic!("expected {what} to be refused, got {other:?}"),
    };
    refused(Expected { checksum: checksum ^ 1, ..right.clone() }, &format!("{checksum:016x}"));
    refused(
        Expected { model: "other-model".into(), ..right.clone() },
        "model is \"m\", the catalog expects \"other-model\"",
    );
    refused(
        Expected { instruction: None, ..right.clone() },
        "instruction is Some(\"Given a query, retrieve\"), the catalog expects None",
    );
    refused(Expected { instruction: Some("x".into()), ..right.clone() }, "instruction");
    refused(Expected { rows: ROWS + 1, ..right.clone() }, "rows is 5, the catalog expects 6");
    refused(Expected { dims: 7, ..right.clone() }, "dims is 4096, the catalog expects 7");

    // A table built for another model with the same tokenizer (and so the same shape) is
    // refused by model name even when the catalog's checksum were to match its own.
    let q = d.join("other.lrt");
    let other_sum = write_table(&q, 5, &TableMeta { model: "other-model".into(), ..meta() });
    let other = QueryTable::open(&q).unwrap();
    match other.verify_against(&Expected { checksum: other_sum, ..right.clone() }) {
        Err(TableError::Corrupt { reason, .. }) => assert!(reason.contains("model"), "{reason}"),
        r => panic!("{r:?}"),
    }
}

// ---- child-process tests -------------------------------------------------------------

fn run_child(test: &str, mode: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .output()
        .unwrap()
}

fn no_core_dump() {
    let r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &r) };
}

/// In the child: prove the guard is active (a registered mapping survives a truncation),
/// then fault on a truncated mapping that is *not* a table. That must kill the process.
fn sigbus_child(mode: &str) {
    no_core_dump();
    if mode != "std" {
        // As in a PostgreSQL backend: no SIGBUS handler before ours. (Rust's own handler,
        // the previous one in "std" mode, swallows a sent SIGBUS: not a case for the guard.)
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    }
    let d = tmpdir(&format!("sigbus-child-{mode}"));
    let p = d.join("t.lrt");
    write_table(&p, 6, &meta());
    let t = QueryTable::open(&p).unwrap();
    truncate(&p, 0);
    assert_eq!(t.row(2), vec![0.0; DIMS]);
    assert!(t.is_damaged());
    println!("GUARDED");
    if mode == "raise" {
        // A SIGBUS sent to the process (not a fault) keeps its default action too.
        unsafe { libc::raise(libc::SIGBUS) };
    } else {
        let q = d.join("plain.bin");
        std::fs::write(&q, vec![7u8; 3 * 4096]).unwrap();
        let file = std::fs::File::open(&q).unwrap();
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        truncate(&q, 0);
        let v = unsafe { std::ptr::read_volatile(&map[2 * 4096 + 1]) };
        println!("SURVIVED {v}");
    }
    println!("SURVIVED");
    std::io::stdout().flush().unwrap();
    unsafe { libc::_exit(0) };
}

#[test]
fn a_sigbus_outside_any_table_is_still_fatal() {
    use std::os::unix::process::ExitStatusExt;
    if let Ok(mode) = std::env::var(CHILD) {
        return sigbus_child(&mode);
    }
    // "std": the previous handler is Rust's own (stack-overflow) handler, which the guard
    // chains to; "dfl": no previous handler, as in a PostgreSQL backend; "raise": a SIGBUS
    // sent rather than caused by a fault, no previous handler.
    for mode in ["std", "dfl", "raise"] {
        let out = run_child("a_sigbus_outside_any_table_is_still_fatal", mode);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("GUARDED"), "{mode}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.contains("SURVIVED"), "{mode}: {stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{mode}: {:?}", out.status);
    }
}

/// Installs a seccomp filter on the calling thread that kills the process on any system call
/// but write, exit and rt_sigreturn. False when seccomp filters are unavailable here.
fn forbid_syscalls() -> bool {
    use libc::{sock_filter, sock_fprog, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let allowed = [libc::SYS_write, libc::SYS_exit, libc::SYS_rt_sigreturn];
    let n = allowed.len() as u8;
    let mut prog = vec![sock_filter { code: (BPF_LD | BPF_W | BPF_ABS) as u16, jt: 0, jf: 0, k: 0 }];
    for (i, nr) in allowed.iter().enumerate() {
        prog.push(sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt: n - i as u8, jf: 0, k: *nr as u32 });
    }
    prog.push(sock_filter { code: (BPF_RET | BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_KILL_PROCESS });
    prog.push(sock_filter { code: (BPF_RET | BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW });
    let fprog = sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return false;
        }
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const sock_fprog) == 0
    }
}

fn no_syscall_child() {
    let d = tmpdir("no-syscall-child");
    let p = d.join("t.lrt");
    write_table(&p, 7, &meta());
    let enc = encoder(&d, &p);
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let wfd = fds[1];
    std::thread::spawn(move || {
        let ids = [1u32, 2, 3, 4, 2];
        let run = |k: usize| {
            for _ in 0..k {
                std::hint::black_box(enc.encode_ids(std::hint::black_box(&ids)).unwrap());
                std::hint::black_box(enc.table().is_damaged());
            }
        };
        run(200); // warm up: the thread's malloc arena, lazy statics
        let msg: &[u8] = if forbid_syscalls() {
            // From here any system call but write/exit kills the process with SIGSYS.
            run(20_000);
            b"NO-SYSCALLS"
        } else {
            b"SECCOMP-UNAVAILABLE"
        };
        unsafe {
            libc::write(wfd, msg.as_ptr().cast(), msg.len());
            libc::syscall(libc::SYS_exit, 0); // this thread only; Rust's exit path makes calls
        }
    });
    let mut buf = [0u8; 64];
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0, "the encoding thread died");
    println!("{}", String::from_utf8_lossy(&buf[..n as usize]));
}

/// Not a timing test: `encode_ids` (rows, weights, the damage flag) makes no system call, so
/// the guard costs the lookup path one atomic load. `check_unchanged` is the caller's, once
/// per statement.
#[test]
fn encode_ids_makes_no_system_call() {
    use std::os::unix::process::ExitStatusExt;
    if std::env::var(CHILD).is_ok() {
        return no_syscall_child();
    }
    let out = run_child("encode_ids_makes_no_system_call", "seccomp");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.signal(), Some(libc::SIGSYS), "encode_ids made a system call");
    assert!(out.status.success(), "{:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    if stdout.contains("SECCOMP-UNAVAILABLE") {
        eprintln!("seccomp filters are not available here; the no-syscall check did not run");
    } else {
        assert!(stdout.contains("NO-SYSCALLS"), "{stdout}");
    }
}
