//! File layout (all integers little-endian):
//!
//! ```text
//! 0   8  magic "LRQTABLE"
//! 8   4  format version (1)
//! 12  4  dtype (1 = f32, 2 = f16)
//! 16  8  rows (vocabulary size)
//! 24  4  dims
//! 28  4  data offset (multiple of 4096, so rows are page- and SIMD-aligned for mmap)
//! 32  8  data checksum: FNV-1a over every byte from the data offset to the end of the file
//!        (rows, padding, weights) as 64-bit little-endian words
//! 40  4  flags: bit 0 = one f32 weight per row follows the rows; other bits must be zero
//! 44  4  metadata length M
//! 48  M  metadata: JSON (model, instruction, tokenizer fingerprint, build info)
//! ..     zero padding up to 4088
//! 4088 8 header checksum: FNV-1a over bytes 0..4088
//! off    rows × dims elements, row-major
//! ..     zero padding up to a multiple of 8 bytes (counted from the data offset)
//! ..     rows × f32 weights, when flag bit 0 is set
//! ```
//!
//! Weights (e.g. idf) make the lookup encoder a weighted mean: Σ w_t·row_t over the query's
//! tokens (repeats count), L2-normalised. A table without weights is the plain mean.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::guard::{GuardError, GuardedMap, MAX_MAPPED_TABLES};

pub const MAGIC: &[u8; 8] = b"LRQTABLE";
pub const FORMAT_VERSION: u32 = 1;
/// Header size and data alignment.
pub const HEADER_ALIGN: usize = 4096;
const FIXED: usize = 48;
/// Flag bit: per-row f32 weights follow the rows.
pub const FLAG_WEIGHTS: u32 = 1;
const HEADER_CHECKSUM_AT: usize = HEADER_ALIGN - 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    pub fn code(self) -> u32 {
        match self {
            Dtype::F32 => 1,
            Dtype::F16 => 2,
        }
    }
    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            1 => Some(Dtype::F32),
            2 => Some(Dtype::F16),
            _ => None,
        }
    }
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "float32" => Some(Dtype::F32),
            "f16" | "float16" => Some(Dtype::F16),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum TableError {
    Io { path: PathBuf, error: std::io::Error },
    Corrupt { path: PathBuf, reason: String },
    Usage(String),
    /// The file changed after it was opened (truncated, replaced, removed, modified in place,
    /// or a read of its mapping faulted): what the mapping serves can no longer be trusted.
    /// `reason` is one of "truncated to N bytes", "replaced", "removed", "modified in place
    /// (…)", "read fault (…)".
    Changed { path: PathBuf, reason: String },
    /// The process already maps [`MAX_MAPPED_TABLES`] tables (the SIGBUS guard's registry).
    TooManyMapped { path: PathBuf, limit: usize },
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::Io { path, error } => write!(f, "query table {}: {error}", path.display()),
            TableError::Corrupt { path, reason } => {
                write!(f, "query table {} is corrupt: {reason}", path.display())
            }
            TableError::Usage(m) => write!(f, "{m}"),
            TableError::Changed { path, reason } => write!(
                f,
                "query table {} changed since it was opened ({reason}); it must be re-opened",
                path.display()
            ),
            TableError::TooManyMapped { path, limit } => write!(
                f,
                "cannot map query table {}: this process already maps {limit} query tables",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TableError {}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TableError + '_ {
    move |error| TableError::Io { path: path.to_path_buf(), error }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over 64-bit little-endian words (the tail zero-padded): ~8× faster than bytewise FNV,
/// enough to verify a 2 GB table in well under a second. Streamable: pass the previous state.
pub fn fnv1a64_words(state: u64, bytes: &[u8]) -> u64 {
    let mut h = state;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h ^= u64::from_le_bytes(c.try_into().unwrap());
        h = h.wrapping_mul(FNV_PRIME);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// What a table says about itself (stored as JSON in the header).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableMeta {
    pub model: String,
    /// `None` for the instruction-free table.
    pub instruction: Option<String>,
    /// Fingerprint of the tokenizer.json the rows are indexed by: a lookup through another
    /// tokenizer would silently read wrong rows, so readers compare it.
    pub tokenizer_fingerprint: String,
    /// Free-form build facts (how rows were made, fitting, …).
    #[serde(default)]
    pub build: serde_json::Value,
}

impl TableMeta {
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("table metadata serialises")
    }
}

/// Fingerprint of a file's bytes (hex FNV-1a/64 words); used for tokenizer.json.
pub fn fingerprint_file(path: &Path) -> Result<String, TableError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(format!("{:016x}-{}", fnv1a64_words(FNV_OFFSET, &bytes), bytes.len()))
}

/// Streams rows into a new table file; the file appears under its final name only after
/// `finish` (written to `<path>.tmp`, fsynced, renamed), so a failed build never leaves a
/// half-written table where a reader could find it.
pub struct TableWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    meta_json: String,
    dtype: Dtype,
    rows: u64,
    dims: u32,
    written_rows: u64,
    checksum: u64,
    /// Bytes already written but not yet hashed (fewer than 8): the checksum works on whole
    /// 64-bit words counted from the start of the data, whatever the row boundaries.
    unhashed: Vec<u8>,
    /// Set once the file has its final name; until then dropping the writer removes the
    /// temporary file, so an error or panic half-way through leaves nothing behind.
    renamed: bool,
    /// Bytes of data written after the header (rows, padding, weights).
    data_bytes: u64,
    has_weights: bool,
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl TableWriter {
    pub fn create(path: &Path, meta: &TableMeta, rows: u64, dims: u32, dtype: Dtype) -> Result<Self, TableError> {
        if rows == 0 || dims == 0 {
            return Err(TableError::Usage("a query table needs at least one row and one dimension".into()));
        }
        let meta_json = meta.to_json();
        if FIXED + meta_json.len() > HEADER_CHECKSUM_AT {
            return Err(TableError::Usage(format!(
                "table metadata is {} bytes; at most {} fit in the header (shorten the instruction)",
                meta_json.len(),
                HEADER_CHECKSUM_AT - FIXED
            )));
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_ALIGN]).map_err(io(&tmp))?;
        Ok(TableWriter {
            path: path.to_path_buf(),
            tmp,
            out,
            meta_json,
            dtype,
            rows,
            dims,
            written_rows: 0,
            checksum: FNV_OFFSET,
            unhashed: Vec::new(),
            renamed: false,
            data_bytes: 0,
            has_weights: false,
        })
    }

    pub fn rows_written(&self) -> u64 {
        self.written_rows
    }

    /// Appends rows (row-major, `dims` values each).
    pub fn write_rows(&mut self, values: &[f32]) -> Result<(), TableError> {
        let dims = self.dims as usize;
        if values.len() % dims != 0 {
            return Err(TableError::Usage(format!(
                "{} values is not a whole number of {dims}-wide rows",
                values.len()
            )));
        }
        let n = (values.len() / dims) as u64;
        if self.written_rows + n > self.rows {
            return Err(TableError::Usage(format!("more than the declared {} rows written", self.rows)));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(TableError::Usage(format!(
                "row {} has a NaN or infinite value",
                self.written_rows + (i / dims) as u64
            )));
        }
        let mut bytes = Vec::with_capacity(values.len() * self.dtype.size());
        match self.dtype {
            Dtype::F32 => values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
            Dtype::F16 => values
                .iter()
                .for_each(|v| bytes.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        }
        self.emit(&bytes)?;
        self.written_rows += n;
        Ok(())
    }

    /// Writes `bytes` after what is already there and folds them into the data checksum.
    fn emit(&mut self, fresh: &[u8]) -> Result<(), TableError> {
        self.out.write_all(fresh).map_err(io(&self.tmp))?;
        let mut bytes = std::mem::take(&mut self.unhashed);
        bytes.extend_from_slice(fresh);
        let whole = bytes.len() / 8 * 8;
        self.checksum = fnv1a64_words(self.checksum, &bytes[..whole]);
        self.unhashed = bytes[whole..].to_vec();
        self.data_bytes += fresh.len() as u64;
        Ok(())
    }

    /// Stores one weight per row (e.g. idf); call once, after every row is written. Weights
    /// must be finite and non-negative. Readers then compute the weighted mean Σ w_t·row_t.
    pub fn write_weights(&mut self, weights: &[f32]) -> Result<(), TableError> {
        if self.has_weights {
            return Err(TableError::Usage("the table's weights were already written".into()));
        }
        if self.written_rows != self.rows {
            return Err(TableError::Usage(format!(
                "weights go after the rows: {} of {} rows written",
                self.written_rows, self.rows
            )));
        }
        if weights.len() as u64 != self.rows {
            return Err(TableError::Usage(format!(
                "{} weights given for a table of {} rows",
                weights.len(),
                self.rows
            )));
        }
        if let Some(i) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
            return Err(TableError::Usage(format!(
                "weight of row {i} is {}: weights must be finite and non-negative",
                weights[i]
            )));
        }
        let pad = (8 - (self.data_bytes % 8) as usize) % 8;
        let mut bytes = vec![0u8; pad];
        weights.iter().for_each(|w| bytes.extend_from_slice(&w.to_le_bytes()));
        self.emit(&bytes)?;
        self.has_weights = true;
        Ok(())
    }

    /// Writes the header, syncs, and moves the file to its final name. Returns the checksum.
    pub fn finish(mut self) -> Result<u64, TableError> {
        if self.written_rows != self.rows {
            let e = TableError::Usage(format!(
                "table declared {} rows but {} were written",
                self.rows, self.written_rows
            ));
            return Err(e);
        }
        let checksum = fnv1a64_words(self.checksum, &self.unhashed);
        let mut header = vec![0u8; HEADER_ALIGN];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&self.dtype.code().to_le_bytes());
        header[16..24].copy_from_slice(&self.rows.to_le_bytes());
        header[24..28].copy_from_slice(&self.dims.to_le_bytes());
        header[28..32].copy_from_slice(&(HEADER_ALIGN as u32).to_le_bytes());
        header[32..40].copy_from_slice(&checksum.to_le_bytes());
        let flags = if self.has_weights { FLAG_WEIGHTS } else { 0 };
        header[40..44].copy_from_slice(&flags.to_le_bytes());
        header[44..48].copy_from_slice(&(self.meta_json.len() as u32).to_le_bytes());
        header[FIXED..FIXED + self.meta_json.len()].copy_from_slice(self.meta_json.as_bytes());
        let hc = fnv1a64_words(FNV_OFFSET, &header[..HEADER_CHECKSUM_AT]);
        header[HEADER_CHECKSUM_AT..].copy_from_slice(&hc.to_le_bytes());
        let tmp = self.tmp.clone();
        let result = (|| {
            self.out.flush()?;
            let file = self.out.get_mut();
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)?;
            self.renamed = true;
            if let Some(dir) = self.path.parent() {
                // Make the rename itself durable.
                File::open(dir).and_then(|d| d.sync_all()).ok();
            }
            Ok(())
        })();
        if let Err(error) = result {
            return Err(TableError::Io { path: tmp, error });
        }
        Ok(checksum)
    }

    /// Abandons the build; dropping removes the temporary file.
    pub fn abort(self) {}
}

/// What the catalog says a table must be; [`QueryTable::verify_against`] compares it with the
/// opened file, so that a valid table that is not *this* table (another model's with the same
/// tokenizer, another instruction's, an older build) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The data checksum recorded when the table was built.
    pub checksum: u64,
    pub model: String,
    pub instruction: Option<String>,
    pub rows: usize,
    pub dims: usize,
}

/// The identity and state of a table file when it was opened, to notice any later change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let t = |r: std::io::Result<std::time::SystemTime>| {
                r.ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or((0, 0), |d| (d.as_secs() as i64, d.subsec_nanos() as i64))
            };
            FileStamp { dev: 0, ino: 0, size: m.len(), mtime: t(m.modified()), ctime: t(m.created()) }
        }
    }
}

/// A table mapped read-only. Opening verifies the header, the size, and the data checksum, so a
/// damaged file is an error rather than wrong vectors.
///
/// The mapping is registered with the SIGBUS guard (see `guard.rs`): a file truncated while
/// mapped makes reads return zeros and flags the table damaged ([`QueryTable::is_damaged`])
/// instead of killing the process. [`QueryTable::check_unchanged`] reports any change of the
/// file since it was opened; callers run it once per statement and re-open on error.
pub struct QueryTable {
    path: PathBuf,
    /// Unregistered from the guard, then unmapped, when the table drops.
    map: GuardedMap,
    /// The opened file, kept for `fstat` in `check_unchanged`.
    file: File,
    stamp: FileStamp,
    dtype: Dtype,
    rows: usize,
    dims: usize,
    offset: usize,
    checksum: u64,
    meta_json: String,
    /// Byte offset of the per-row f32 weights, when the table has them.
    weights_at: Option<usize>,
}

impl std::fmt::Debug for QueryTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryTable")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("rows", &self.rows)
            .field("dims", &self.dims)
            .field("weights", &self.weights_at.is_some())
            .finish()
    }
}

impl QueryTable {
    pub fn open(path: &Path) -> Result<Self, TableError> {
        let corrupt = |reason: String| TableError::Corrupt { path: path.to_path_buf(), reason };
        let file = File::open(path).map_err(io(path))?;
        let stamp = FileStamp::of(&file.metadata().map_err(io(path))?);
        // Safety: tables are immutable once renamed into place; a rebuild writes a new file.
        // A file truncated or changed anyway cannot crash the process (the mapping is guarded
        // before its first read) and is reported by `is_damaged`/`check_unchanged`.
        let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
        if map.len() < HEADER_ALIGN {
            return Err(corrupt(format!("{} bytes is shorter than the header", map.len())));
        }
        let map = GuardedMap::new(map).map_err(|e| match e {
            GuardError::Full => TableError::TooManyMapped { path: path.to_path_buf(), limit: MAX_MAPPED_TABLES },
            GuardError::Install(error) => TableError::Io { path: path.to_path_buf(), error },
        })?;
        if &map[0..8] != MAGIC {
            return Err(corrupt("not a lightretriever query table (bad magic)".into()));
        }
        let u32_at = |at: usize| u32::from_le_bytes(map[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().unwrap());
        let hc = fnv1a64_words(FNV_OFFSET, &map[..HEADER_CHECKSUM_AT]);
        if hc != u64_at(HEADER_CHECKSUM_AT) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(corrupt(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let dtype = Dtype::from_code(u32_at(12)).ok_or_else(|| corrupt(format!("unknown dtype {}", u32_at(12))))?;
        let rows = u64_at(16) as usize;
        let dims = u32_at(24) as usize;
        let offset = u32_at(28) as usize;
        let checksum = u64_at(32);
        let flags = u32_at(40);
        let meta_len = u32_at(44) as usize;
        if flags & !FLAG_WEIGHTS != 0 {
            return Err(corrupt(format!("unknown flags {flags:#x}")));
        }
        if offset % HEADER_ALIGN != 0 || offset < HEADER_ALIGN || FIXED + meta_len > HEADER_CHECKSUM_AT {
            return Err(corrupt("bad data offset or metadata length".into()));
        }
        let row_bytes = rows
            .checked_mul(dims)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| corrupt("dimensions overflow".into()))?;
        let weights_at = if flags & FLAG_WEIGHTS != 0 {
            Some(offset + row_bytes.div_ceil(8) * 8)
        } else {
            None
        };
        let expected = match weights_at {
            Some(at) => rows.checked_mul(4).and_then(|n| n.checked_add(at)),
            None => offset.checked_add(row_bytes),
        }
        .ok_or_else(|| corrupt("dimensions overflow".into()))?;
        if map.len() != expected {
            return Err(corrupt(format!("file is {} bytes, header says {expected}", map.len())));
        }
        let meta_json = std::str::from_utf8(&map[FIXED..FIXED + meta_len])
            .map_err(|_| corrupt("metadata is not UTF-8".into()))?
            .to_owned();
        let data_ok = fnv1a64_words(FNV_OFFSET, &map[offset..]) == checksum;
        if map.is_damaged() {
            return Err(corrupt("a read of the file faulted while verifying it (truncated while opening?)".into()));
        }
        if !data_ok {
            return Err(corrupt("data checksum mismatch".into()));
        }
        #[cfg(unix)]
        {
            let _ = map.map().advise(memmap2::Advice::Random);
        }
        let table = QueryTable {
            path: path.to_path_buf(),
            map,
            file,
            stamp,
            dtype,
            rows,
            dims,
            offset,
            checksum,
            meta_json,
            weights_at,
        };
        // The stamp was taken before mapping: a change during the verification is caught here.
        if table.stamp.size != expected as u64 {
            let was = table.stamp.size;
            return Err(table.changed(format!("modified in place while opening ({was} bytes when opened)")));
        }
        table.check_unchanged()?;
        Ok(table)
    }

    fn changed(&self, reason: String) -> TableError {
        TableError::Changed { path: self.path.clone(), reason }
    }

    /// True once a read of the mapping faulted (the file was truncated, or its storage failed,
    /// while mapped): rows read since may be zeros. One atomic load, no system call.
    #[inline]
    pub fn is_damaged(&self) -> bool {
        self.map.is_damaged()
    }

    /// Checks that the file is still the one that was opened, unchanged: an `fstat` of the
    /// kept descriptor (size, modification and change times with nanoseconds) and a `stat` of
    /// the path (still the same device and inode, i.e. not replaced by a rename or removed),
    /// and that no read of the mapping faulted. Any difference is [`TableError::Changed`]:
    /// re-open the table. Two system calls; call it once per statement, not per row.
    ///
    /// An in-place rewrite of the same size is seen through the change time, whose granularity
    /// is the kernel's coarse clock (a few milliseconds), so one that lands within that tick of
    /// the open is not seen (a truncation always is, through the size).
    pub fn check_unchanged(&self) -> Result<(), TableError> {
        let now = FileStamp::of(&self.file.metadata().map_err(io(&self.path))?);
        if now.size < self.stamp.size {
            return Err(self.changed(format!("truncated to {} bytes", now.size)));
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => {
                let at_path = FileStamp::of(&m);
                if (at_path.dev, at_path.ino) != (self.stamp.dev, self.stamp.ino) {
                    return Err(self.changed("replaced".into()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(self.changed("removed".into())),
            Err(error) => return Err(TableError::Io { path: self.path.clone(), error }),
        }
        if now != self.stamp {
            let what = if now.size != self.stamp.size {
                format!("size {} bytes, was {}", now.size, self.stamp.size)
            } else if now.mtime != self.stamp.mtime {
                "modification time changed".to_owned()
            } else {
                "change time changed".to_owned()
            };
            return Err(self.changed(format!("modified in place: {what}")));
        }
        if self.is_damaged() {
            return Err(self.changed("read fault: a page of the mapping could not be read".into()));
        }
        Ok(())
    }

    /// Compares the table with what the catalog records for it: the data checksum, the model
    /// and instruction in the metadata, rows and dims. A mismatch is [`TableError::Corrupt`]
    /// naming the field and both values.
    pub fn verify_against(&self, expected: &Expected) -> Result<(), TableError> {
        let corrupt = |reason: String| TableError::Corrupt { path: self.path.clone(), reason };
        if self.checksum != expected.checksum {
            return Err(corrupt(format!(
                "data checksum is {:016x}, the catalog expects {:016x}",
                self.checksum, expected.checksum
            )));
        }
        let meta = self.meta()?;
        if meta.model != expected.model {
            return Err(corrupt(format!("model is {:?}, the catalog expects {:?}", meta.model, expected.model)));
        }
        if meta.instruction != expected.instruction {
            return Err(corrupt(format!(
                "instruction is {:?}, the catalog expects {:?}",
                meta.instruction, expected.instruction
            )));
        }
        if self.rows != expected.rows {
            return Err(corrupt(format!("rows is {}, the catalog expects {}", self.rows, expected.rows)));
        }
        if self.dims != expected.dims {
            return Err(corrupt(format!("dims is {}, the catalog expects {}", self.dims, expected.dims)));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dims(&self) -> usize {
        self.dims
    }
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    pub fn checksum(&self) -> u64 {
        self.checksum
    }
    /// The metadata JSON written by the builder (model, instruction, tokenizer fingerprint, build).
    pub fn meta_json(&self) -> &str {
        &self.meta_json
    }

    pub fn meta(&self) -> Result<TableMeta, TableError> {
        serde_json::from_str(&self.meta_json).map_err(|e| TableError::Corrupt {
            path: self.path.clone(),
            reason: format!("metadata is not valid: {e}"),
        })
    }

    /// True when the table stores one weight per row.
    pub fn has_weights(&self) -> bool {
        self.weights_at.is_some()
    }

    /// The stored weight of row `id` (1.0 for a table without weights). `id` must be `< rows`.
    #[inline]
    pub fn weight(&self, id: usize) -> f32 {
        debug_assert!(id < self.rows);
        match self.weights_at {
            Some(at) => {
                let b = &self.map[at + 4 * id..at + 4 * id + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            None => 1.0,
        }
    }

    /// A copy of all row weights, when the table has them.
    pub fn weights(&self) -> Option<Vec<f32>> {
        self.weights_at.map(|_| (0..self.rows).map(|i| self.weight(i)).collect())
    }

    /// Adds `weight × row(id)` into `acc` (length `dims`). `id` must be `< rows`.
    #[inline]
    pub fn add_row_to(&self, id: usize, weight: f32, acc: &mut [f32]) {
        debug_assert!(id < self.rows && acc.len() == self.dims);
        let start = self.offset + id * self.dims * self.dtype.size();
        match self.dtype {
            Dtype::F32 => {
                let bytes = &self.map[start..start + 4 * self.dims];
                for (a, c) in acc.iter_mut().zip(bytes.chunks_exact(4)) {
                    *a += weight * f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F16 => {
                let bytes = &self.map[start..start + 2 * self.dims];
                for (a, c) in acc.iter_mut().zip(bytes.chunks_exact(2)) {
                    *a += weight * half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        }
    }

    /// A copy of one row (tests and fitting; the lookup path accumulates without copying).
    pub fn row(&self, id: usize) -> Vec<f32> {
        let mut v = vec![0.0; self.dims];
        self.add_row_to(id, 1.0, &mut v);
        v
    }
}
