//! oneDNN's sgemm (Debian's `libdnnl2`), loaded at run time: the CPU GEMM of the native
//! forwards when it is installed. Measured on this project's 2-core AVX-512 machine
//! (`make bench-encode`), it runs f32 GEMMs at about 90 % of the cores' FMA peak, twice the
//! `gemm` crate's rate (candle's CPU matmul); without the library, or with
//! `LR_CPU_GEMM=builtin` in the environment, the `gemm` crate runs them.
//!
//! Each call runs on one thread: oneDNN's OpenMP team is pinned to 1 on every thread that calls
//! it, and `kernels::gemm` splits large products across the rayon threads itself, so that one
//! pool (rayon's) owns the cores and no OpenMP threads spin beside it.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

type Sgemm = unsafe extern "C" fn(
    c_char,
    c_char,
    i64,
    i64,
    i64,
    f32,
    *const f32,
    i64,
    *const f32,
    i64,
    f32,
    *mut f32,
    i64,
) -> i32;
type SetNumThreads = unsafe extern "C" fn(i32);

struct Library {
    sgemm: Sgemm,
    set_num_threads: SetNumThreads,
}

static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();

thread_local! {
    /// Whether this thread's OpenMP team size is already 1.
    static SINGLE: Cell<bool> = const { Cell::new(false) };
}

fn load() -> Option<Library> {
    if std::env::var("LR_CPU_GEMM").is_ok_and(|v| v == "builtin") {
        return None;
    }
    // Safety: dlopen/dlsym with NUL-terminated names; the symbols' C signatures are oneDNN's
    // (dnnl.h: dnnl_sgemm, dnnl_dim_t = int64_t) and libgomp's, and the handle is never closed.
    unsafe {
        let handle = libc::dlopen(c"libdnnl.so.2".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let sgemm = libc::dlsym(handle, c"dnnl_sgemm".as_ptr());
        // Found in the library's own dependencies (libgomp).
        let threads = libc::dlsym(handle, c"omp_set_num_threads".as_ptr());
        if sgemm.is_null() || threads.is_null() {
            return None;
        }
        Some(Library {
            sgemm: std::mem::transmute::<*mut c_void, Sgemm>(sgemm),
            set_num_threads: std::mem::transmute::<*mut c_void, SetNumThreads>(threads),
        })
    }
}

fn library() -> Option<&'static Library> {
    LIBRARY.get_or_init(load).as_ref()
}

/// Which GEMM the native CPU forwards use: `"onednn"` or `"gemm-crate"`.
pub fn backend() -> &'static str {
    if library().is_some() {
        "onednn"
    } else {
        "gemm-crate"
    }
}

/// Whether [`sgemm`] runs this product: oneDNN is loaded, both operands are row- or
/// column-contiguous, and every leading dimension is one oneDNN accepts (checked here, before
/// anything is written, so that the caller can take another GEMM instead).
pub fn supports(m: usize, n: usize, k: usize, lhs: (usize, usize), rhs: (usize, usize), dst_rs: usize) -> bool {
    library().is_some() && leading_dimensions(m, n, k, lhs, rhs, dst_rs).is_some()
}

/// oneDNN's (transa, lda, transb, ldb, ldc) for these strides, or None where it has none.
fn leading_dimensions(m: usize, n: usize, k: usize, lhs: (usize, usize), rhs: (usize, usize), dst_rs: usize) -> Option<(c_char, i64, c_char, i64, i64)> {
    let ((ta, lda), (tb, ldb)) = (layout(lhs.0, lhs.1)?, layout(rhs.0, rhs.1)?);
    // oneDNN checks each leading dimension against the row it strides over, even where only
    // one such row exists (then the stride is never used and may be raised).
    let fit = |ld: i64, row: usize, rows: usize| -> Option<i64> {
        if ld >= row.max(1) as i64 {
            Some(ld)
        } else if rows <= 1 {
            Some(row.max(1) as i64)
        } else {
            None
        }
    };
    let n_ = b'N' as c_char;
    let lda = if ta == n_ { fit(lda, k, m) } else { fit(lda, m, k) }?;
    let ldb = if tb == n_ { fit(ldb, n, k) } else { fit(ldb, k, n) }?;
    let ldc = fit(dst_rs as i64, n, m)?;
    Some((ta, lda, tb, ldb, ldc))
}

/// An operand oneDNN reads: row-major (`'N'`) or transposed (`'T'`), with its leading dimension.
fn layout(rs: usize, cs: usize) -> Option<(c_char, i64)> {
    if cs == 1 {
        Some((b'N' as c_char, rs.max(1) as i64))
    } else if rs == 1 {
        Some((b'T' as c_char, cs.max(1) as i64))
    } else {
        None
    }
}

/// `dst[m×n] = alpha·lhs·rhs + beta·dst` on this thread, row-major `dst` with rows `dst_rs`
/// apart; false when oneDNN is not loaded, the layout is one [`supports`] refuses (then nothing
/// is done), or oneDNN reports an error.
///
/// # Safety
/// As `kernels::gemm`: every addressed element inside live allocations, `dst` not overlapping
/// the operands and not accessed by anything else meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
    dst: *mut f32,
    dst_rs: usize,
) -> bool {
    let Some(lib) = library() else { return false };
    let Some((ta, lda, tb, ldb, ldc)) = leading_dimensions(m, n, k, (lhs.1, lhs.2), (rhs.1, rhs.2), dst_rs) else { return false };
    if !SINGLE.get() {
        (lib.set_num_threads)(1);
        SINGLE.set(true);
    }
    let status = (lib.sgemm)(
        ta,
        tb,
        m as i64,
        n as i64,
        k as i64,
        alpha,
        lhs.0,
        lda,
        rhs.0,
        ldb,
        beta,
        dst,
        ldc,
    );
    status == 0
}
