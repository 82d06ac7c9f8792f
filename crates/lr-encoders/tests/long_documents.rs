//! A 14 MB document through the document encoders: its vectors are exactly those of its first
//! 100 KB (a model reads only its first `max_length` ids), and encoding it costs no more memory
//! than encoding those 100 KB — the text is cut before Hugging Face tokenizes it (which costs
//! about 55× the text: 770 MB here). Memory is the heap's peak, counted by this binary's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::{BertEncoder, LlmEncoder, SparseEncoder};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time (they run on parallel threads and would count each other's allocations).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `f`'s result and the heap's peak above its level when `f` started, in bytes.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

const MB: usize = 1 << 20;

/// CISI documents concatenated to 14 MB, and its first ~100 KB (cut before a space).
fn texts() -> (String, String) {
    let text = lr_testkit::huge_cisi_text(14_000_000);
    let mut end = 100_000;
    while !text.is_char_boundary(end) || !text[end..].starts_with(' ') {
        end += 1;
    }
    let head = text[..end].to_string();
    (text, head)
}

/// Encodes the head and the whole text with `encode`; asserts equal outputs and a peak for the
/// whole text within 16 MB of the head's.
fn compare<T: PartialEq + std::fmt::Debug>(what: &str, encode: impl Fn(&str) -> T) {
    let (text, head) = texts();
    let (want, head_peak) = peak_during(|| encode(&head));
    let (got, peak) = peak_during(|| encode(&text));
    eprintln!("{what}: peak {:.1} MB for 14 MB, {:.1} MB for its first 100 KB", peak as f64 / MB as f64, head_peak as f64 / MB as f64);
    assert!(
        peak <= head_peak + 16 * MB,
        "{what}: encoding 14 MB peaked at {} MB of heap, its first 100 KB at {} MB",
        peak / MB,
        head_peak / MB
    );
    assert!(got == want, "{what}: the 14 MB text's output differs from its first 100 KB's");
}

#[test]
fn bert_dense_document_of_14_mb() {
    let _serial = serial();
    let info = ModelInfo::inspect(&lr_testkit::dense_model_dir(), &ModelOptions::default()).unwrap();
    let enc = BertEncoder::load(&info, &Device::Cpu).unwrap();
    compare("minilm ids", |t| enc.document_ids(t).unwrap());
    compare("minilm vector", |t| enc.encode(&[t]).unwrap());
    let (text, _) = texts();
    assert_eq!(enc.document_ids(&text).unwrap().len(), info.max_length);
}

#[test]
fn bert_sparse_document_of_14_mb() {
    let _serial = serial();
    let info = ModelInfo::inspect(&lr_testkit::sparse_model_dir(), &ModelOptions::default()).unwrap();
    let enc = SparseEncoder::load(&info, &Device::Cpu).unwrap();
    compare("splade-tiny ids", |t| enc.document_ids(t).unwrap());
    compare("splade-tiny vector", |t| enc.encode(&[t]).unwrap());
}

#[test]
fn decoder_documents_of_14_mb() {
    let _serial = serial();
    let root = lr_testkit::tiny_models_dir();
    for dir in ["tiny-qwen2", "tiny-llama"] {
        let info = ModelInfo::inspect(&root.join(dir), &ModelOptions::default()).unwrap();
        let enc = LlmEncoder::load(&info, &Device::Cpu).unwrap();
        compare(&format!("{dir} ids"), |t| enc.document_ids(t).unwrap());
        compare(&format!("{dir} dense"), |t| enc.encode(&[t]).unwrap());
        compare(&format!("{dir} sparse"), |t| enc.encode_sparse(&[t], None).unwrap());
        let (text, _) = texts();
        assert_eq!(enc.document_ids(&text).unwrap().len(), info.max_length, "{dir}");
    }
}
