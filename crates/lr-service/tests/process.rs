//! The inference process: serves the socket like the in-process service, is cut loose from its
//! parent (own session, no inherited descriptors or shared mappings, first OOM victim), and its
//! death is an I/O error for callers in flight and a restart for the parent — never the
//! parent's death. One test per binary: fork from a test process with few threads.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use lr_model::{ModelInfo, ModelOptions};
use lr_service::{CallError, Client, Exit, InferenceProcess, Output, Request, Task};
use lr_testkit::dense_model_dir;

fn request(info: &ModelInfo, text: &str) -> Request {
    Request { model: "minilm".into(), info: info.clone(), task: Task::Dense { texts: vec![text.into()] } }
}

fn dense(o: Output) -> Vec<f32> {
    match o {
        Output::Dense(mut v) => v.pop().unwrap(),
        other => panic!("expected dense, got {other:?}"),
    }
}

fn wait_exit(p: &InferenceProcess) -> Exit {
    for _ in 0..500 {
        if let Some(e) = p.try_wait() {
            return e;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the inference process did not exit");
}

#[test]
fn the_inference_process_serves_is_isolated_and_its_death_is_survivable() {
    // The expected vector comes from the independent reference, not from encoding here: this
    // process must start no thread pool (rayon) before it forks, as the worker starts none —
    // a child's copy of a pool has no threads.
    let info = ModelInfo::inspect(&dense_model_dir(), &ModelOptions::default()).unwrap();
    let reference = lr_testkit::reference();
    let sentence = &reference["sentences"][0];
    let text = sentence["text"].as_str().unwrap().to_owned();
    let want = lr_testkit::floats(&sentence["embedding"]);
    let close = |got: &[f32]| got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-4);
    let dir = std::env::temp_dir().join(format!("lr-process-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("encoder.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();

    // Things the child must not inherit: a shared mapping and an open file.
    let shared = unsafe {
        libc::mmap(std::ptr::null_mut(), 1 << 16, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(shared, libc::MAP_FAILED);
    let secret = std::fs::File::create(dir.join("inherited-file")).unwrap();

    let child = InferenceProcess::spawn(&listener, "cpu", 32, || {}).unwrap();
    let pid = child.pid();
    let mut c = Client::connect(&path).unwrap();
    let got = dense(c.call(&request(&info, &text), || true).unwrap().unwrap());
    assert!(close(&got), "served by the child: {:?}", &got[..4]);

    // Cut loose: own session, no inherited file or shared mapping, first OOM victim.
    assert_ne!(unsafe { libc::getsid(pid) }, unsafe { libc::getsid(0) });
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok().map(|p| p.to_string_lossy().into_owned()))
        .collect();
    assert!(!fds.iter().any(|f| f.contains("inherited-file")), "{fds:?}");
    assert!(fds.iter().any(|f| f.starts_with("socket:")), "it keeps the listening socket: {fds:?}");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let shared_start = format!("{:x}-", shared as usize);
    assert!(!maps.lines().any(|l| l.starts_with(&shared_start)), "the shared mapping is gone in the child");
    // Its own read-only mappings (the model's weights) are fine; nothing shared and writable.
    let writable_shared: Vec<&str> = maps.lines().filter(|l| l.split_whitespace().nth(1) == Some("rw-s")).collect();
    assert!(writable_shared.is_empty(), "{writable_shared:?}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap().trim(), "1000");
    drop(secret);

    // A call in flight when the child is killed gets an I/O error; the parent sees the signal.
    let mut inflight = Client::connect(&path).unwrap();
    let long: Vec<String> = (0..2000).map(|i| format!("a long text number {i} about catalogues and indexes")).collect();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let r = inflight.call(&Request { model: "minilm".into(), info: info.clone(), task: Task::Dense { texts: long } }, || true);
    killer.join().unwrap();
    assert!(matches!(r, Err(CallError::Io(_))), "{r:?}");
    assert_eq!(wait_exit(&child), Exit::Signal(libc::SIGKILL));

    // Connections made while no child runs wait in the listener's backlog for the next one.
    let waiting = std::thread::spawn({
        let (path, info, text) = (path.clone(), info.clone(), text.clone());
        move || dense(Client::connect(&path).unwrap().call(&request(&info, &text), || true).unwrap().unwrap())
    });
    std::thread::sleep(Duration::from_millis(200));
    let again = InferenceProcess::spawn(&listener, "cpu", 32, || {}).unwrap();
    let got = waiting.join().unwrap();
    assert!(close(&got));
    assert_eq!(again.stop(Duration::from_secs(5)), Exit::Signal(libc::SIGTERM));

    // The child dies with its parent: an intermediate process starts one and exits.
    let report = dir.join("grandchild.pid");
    match unsafe { libc::fork() } {
        0 => {
            let p = InferenceProcess::spawn(&listener, "cpu", 32, || {}).unwrap();
            std::fs::write(&report, p.pid().to_string()).unwrap();
            unsafe { libc::_exit(0) };
        }
        middle => {
            let mut status = 0;
            unsafe { libc::waitpid(middle, &mut status, 0) };
        }
    }
    let orphan: i32 = std::fs::read_to_string(&report).unwrap().parse().unwrap();
    let mut gone = false;
    for _ in 0..500 {
        // Orphans are reaped by init (or a subreaper): gone, or a zombie.
        let state = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap_or_default();
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "the inference process outlived its parent");
    unsafe { libc::munmap(shared, 1 << 16) };
    let _ = listener.as_raw_fd();
    let _ = std::fs::remove_dir_all(&dir);
}
