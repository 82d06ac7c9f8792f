//! Settings, all under the reserved `lightretriever.` prefix.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::error::{raise, Code};

pub static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DEFAULT_SPARSE_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DEFAULT_RERANKER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DEVICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"cpu"));
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static MAX_DRAIN_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static ALLOW_BACKEND_MODELS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(200);
pub static MAX_BATCH: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static STATEMENT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static MAX_FIT_CORPUS_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);

pub fn register() {
    GucRegistry::define_string_guc(
        c"lightretriever.default_model",
        c"Registered model used when a function's model argument is NULL.",
        c"Name of a row in lightretriever.lr_models.",
        &DEFAULT_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"lightretriever.default_reranker",
        c"Registered reranker (PE-Rank checkpoint) used by the rerank functions when their model argument is NULL.",
        c"Name of a row in lightretriever.lr_models whose family is reranker.",
        &DEFAULT_RERANKER,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"lightretriever.default_sparse_model",
        c"Registered masked-LM model used by the sparse functions when their model argument is NULL.",
        c"Name of a row in lightretriever.lr_models with has_lm_head.",
        &DEFAULT_SPARSE_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: the check hook is guarded and only parses its argument.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"lightretriever.device",
            c"Where full models run: cpu, cuda or cuda:N.",
            c"CUDA needs a build with the cargo feature cuda. Models already loaded keep their device until the setting changes.",
            &DEVICE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_device),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"lightretriever.statement_timeout",
        c"Longest a drain worker lets one statement on a user's table run (reading texts, writing vectors, the table's own triggers), and wait for a lock.",
        c"A batch that runs over fails its rows for this attempt (retried with back-off); other tables keep flowing.",
        &STATEMENT_TIMEOUT_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"lightretriever.max_fit_corpus_size",
        c"Most text (and stored vectors) a fit reads from its table into the backend; a larger corpus is an error.",
        c"Each text counts as much as the fit reads of it (about its first 4 MiB), each vector as often as the fit holds it, and 64 bytes a row. To fit a larger table, raise this for the session or fit on a sample (a view with TABLESAMPLE).",
        &MAX_FIT_CORPUS_MB,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_bool_guc(
        c"lightretriever.allow_backend_models",
        c"Lets a backend load and run models itself when no encoder worker is running.",
        c"Off by default: each backend would hold its own copy of each model it uses.",
        &ALLOW_BACKEND_MODELS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lightretriever.max_retries",
        c"Failed encoding attempts of a row before it moves to lightretriever.lr_failed_items.",
        c"Retries back off: 1, 2, 4 ... up to 60 seconds apart.",
        &MAX_RETRIES,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lightretriever.poll_interval",
        c"How long an idle drain worker sleeps between looks at the queues.",
        c"",
        &POLL_INTERVAL_MS,
        10,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // Postmaster-context settings exist only when the library is preloaded (PostgreSQL refuses
    // to create them later); without preloading there are no workers for them to configure.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_int_guc(
            c"lightretriever.workers",
            c"Encoder background workers started with the server (needs lightretriever in shared_preload_libraries).",
            c"Each worker holds its own copy of every model it is asked for; 0 starts none.",
            &WORKERS,
            0,
            64,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"lightretriever.max_drain_workers",
            c"Most drain workers (one per database with an active auto-encoding, times lightretriever.workers) running at once.",
            c"Each is a background worker: max_worker_processes must leave room for them, the encoder workers and the launcher.",
            &MAX_DRAIN_WORKERS,
            1,
            1024,
            GucContext::Sighup,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"lightretriever.max_batch",
            c"Most documents one model run of the encoder worker takes from concurrent requests.",
            c"",
            &MAX_BATCH,
            1,
            1024,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"lightretriever".as_ptr()) };
}

/// `lightretriever.device` must parse (`cpu`, `cuda`, `cuda:N`); whether CUDA is there is
/// checked when a model loads, with an error that says what is missing.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_device(
    value: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pgrx::pg_sys::GucSource::Type,
) -> bool {
    let text = unsafe { value.as_ref().filter(|v| !v.is_null()).map(|v| std::ffi::CStr::from_ptr(*v).to_string_lossy().into_owned()) };
    let Some(text) = text else { return true };
    if is_device_spec(&text) {
        return true;
    }
    let detail = CString::new(format!("\"{text}\" is not cpu, cuda or cuda:N (N a device number).")).unwrap_or_default();
    unsafe { pgrx::pg_sys::GUC_check_errdetail_string = pgrx::pg_sys::pstrdup(detail.as_ptr()) };
    false
}

/// `cpu`, `cuda` or `cuda:N` (empty means cpu).
fn is_device_spec(s: &str) -> bool {
    matches!(s.trim(), "" | "cpu" | "cuda") || s.trim().strip_prefix("cuda:").is_some_and(|n| n.parse::<u16>().is_ok())
}

/// `lightretriever.statement_timeout` in milliseconds.
pub fn statement_timeout_ms() -> i32 {
    STATEMENT_TIMEOUT_MS.get().max(100)
}

/// `lightretriever.device` (`cpu` when unset).
pub fn device_spec() -> String {
    DEVICE.get().map(|d| d.to_string_lossy().into_owned()).filter(|d| !d.is_empty()).unwrap_or_else(|| "cpu".into())
}

pub fn workers() -> i32 {
    WORKERS.get()
}

pub fn max_drain_workers() -> usize {
    MAX_DRAIN_WORKERS.get().max(1) as usize
}

pub fn allow_backend_models() -> bool {
    ALLOW_BACKEND_MODELS.get()
}

pub fn max_retries() -> i32 {
    MAX_RETRIES.get()
}

pub fn poll_interval() -> std::time::Duration {
    std::time::Duration::from_millis(POLL_INTERVAL_MS.get().max(10) as u64)
}

/// `lightretriever.max_fit_corpus_size` in bytes.
pub fn max_fit_corpus_bytes() -> usize {
    (MAX_FIT_CORPUS_MB.get().max(1) as usize).saturating_mul(1 << 20)
}

pub fn max_batch() -> usize {
    MAX_BATCH.get().max(1) as usize
}

/// The model a call should use: its argument, else `lightretriever.default_model`.
pub fn resolve_model(arg: Option<&str>) -> String {
    resolve(arg, &DEFAULT_MODEL, "lightretriever.default_model")
}

/// The sparse model a call should use: its argument, else `lightretriever.default_sparse_model`.
pub fn resolve_sparse_model(arg: Option<&str>) -> String {
    resolve(arg, &DEFAULT_SPARSE_MODEL, "lightretriever.default_sparse_model")
}

/// The reranker a call should use: its argument, else `lightretriever.default_reranker`.
pub fn resolve_reranker(arg: Option<&str>) -> String {
    resolve(arg, &DEFAULT_RERANKER, "lightretriever.default_reranker")
}

fn resolve(arg: Option<&str>, setting: &GucSetting<Option<CString>>, guc: &str) -> String {
    if let Some(m) = arg {
        return m.to_owned();
    }
    match setting.get() {
        Some(m) if !m.as_bytes().is_empty() => m.to_string_lossy().into_owned(),
        _ => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: no model given and {guc} is not set"),
            Some(&format!("Pass the model name, or SET {guc} = '<name>' (see lightretriever.lr_models).")),
        ),
    }
}

static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by the postmaster when it registers the encoder workers.
pub fn set_workers_registered(yes: bool) {
    REGISTERED.store(yes, std::sync::atomic::Ordering::Relaxed);
}

/// True in backends of a server that started encoder workers (the flag is inherited from the
/// postmaster, which ran `register`).
pub fn workers_registered() -> bool {
    REGISTERED.load(std::sync::atomic::Ordering::Relaxed)
}


