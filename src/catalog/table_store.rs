//! Query tables stored in the database: every version's bytes are rows of
//! `lr_query_table_chunks` (WAL-logged and dumped, so a streaming replica, a restored dump and
//! every Citus node have them), and the file under the data directory is this node's cache of
//! them, written on first use (`lr_table::cache`). Lookups map the file; the chunks are read only
//! when the file is missing or damaged.

use std::collections::HashSet;
use std::path::Path;

use lr_table::{Expected, QueryTable, TableError};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::error::{raise, row_or_none, Code, OrRaise};

use super::query_tables::REBUILD_HINT;

/// One version of a (model, instruction) table, as its catalog row describes it.
#[derive(Debug, Clone)]
pub struct StoredTable {
    pub model: String,
    /// '' for no instruction.
    pub instruction: String,
    pub version: i32,
    pub checksum: u64,
    /// The `file` its row names: where the server that built it wrote it (before 0.6.0, with a
    /// name of its own; since, the name [`StoredTable::local_file`] derives there).
    pub file: String,
    pub rows: usize,
    pub dims: usize,
}

fn database() -> u32 {
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

impl StoredTable {
    /// This node's file of the version (relative to the data directory).
    pub fn local_file(&self) -> String {
        lr_table::table_file(database(), &self.model, &self.instruction, self.version, self.checksum)
    }

    /// What the file must be: checksum, model, instruction, shape.
    pub fn expected(&self) -> Expected {
        Expected {
            checksum: self.checksum,
            model: self.model.clone(),
            instruction: (!self.instruction.is_empty()).then(|| self.instruction.clone()),
            rows: self.rows,
            dims: self.dims,
        }
    }

    /// The row's `file`, when it is one of this database's (a restored dump's row names the
    /// source database's file, which is not this database's to use, move or remove): a plain
    /// file name in the tables directory, nothing after the prefix that could leave it.
    pub fn own_recorded_file(&self) -> Option<&str> {
        let prefix = format!("{}/db{}-", lr_table::TABLE_DIR, database());
        let rest = self.file.strip_prefix(&prefix)?;
        (!rest.is_empty() && !rest.contains('/')).then_some(self.file.as_str())
    }
}

/// Whether this database's extension has the chunk table: a server running this library serves
/// the SQL of earlier versions until `ALTER EXTENSION lightretriever UPDATE` (which then stores
/// their tables: `lr_store_query_tables`).
fn chunks_table_exists() -> bool {
    row_or_none(crate::spi::read_one::<bool>("SELECT pg_catalog.to_regclass('lightretriever.lr_query_table_chunks') IS NOT NULL", &[])).flatten() == Some(true)
}

/// Stores the file at `path` as the chunks of `table` (its catalog row is written already). One
/// chunk at a time, each in a memory context of its own, so a 1 GB table never sits in memory.
pub fn store_chunks(table: &StoredTable, path: &Path) {
    if !chunks_table_exists() {
        return;
    }
    let chunks = lr_table::cache::chunks_of(path).or_raise(Code::ERRCODE_IO_ERROR);
    let mut per_chunk = PgMemoryContexts::new("lightretriever chunk");
    for (index, chunk) in chunks.enumerate() {
        pgrx::check_for_interrupts!();
        let chunk = chunk.or_raise(Code::ERRCODE_IO_ERROR);
        // SAFETY: the context lives across the loop; nothing allocated in it outlives the
        // statement, and it is reset after each.
        unsafe {
            per_chunk.switch_to(|_| {
                Spi::run_with_args(
                    "INSERT INTO lightretriever.lr_query_table_chunks (model, instruction, version, chunk, data)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        table.model.as_str().into(),
                        table.instruction.as_str().into(),
                        table.version.into(),
                        (index as i32).into(),
                        chunk.as_slice().into(),
                    ],
                )
            })
        }
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
        unsafe { per_chunk.reset() };
    }
}

/// Chunk `index` of `table`, or None past the last.
fn read_chunk(table: &StoredTable, index: u32) -> Option<Vec<u8>> {
    if index == 0 && !chunks_table_exists() {
        return None;
    }
    crate::spi::read_bytes(
        "SELECT data FROM lightretriever.lr_query_table_chunks
          WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2
            AND version OPERATOR(pg_catalog.=) $3 AND chunk OPERATOR(pg_catalog.=) $4",
        &[table.model.as_str().into(), table.instruction.as_str().into(), table.version.into(), (index as i32).into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The file at `path` if it is the table `expected` describes.
pub fn open_verified(path: &Path, expected: &Expected) -> Result<QueryTable, TableError> {
    let table = QueryTable::open(path)?;
    table.verify_against(expected)?;
    Ok(table)
}

/// The table `table` as this node's file, verified against `expected` (header, size, data
/// checksum, model, instruction, shape). A missing file — a replica, a restored dump, a Citus
/// node, or a file removed by hand — or a damaged one is written again from the stored chunks
/// first; only a version with no stored bytes (built before 0.6.0 and never stored, see
/// `lr_store_query_tables`) or stored bytes that do not verify are errors.
pub fn open_table(table: &StoredTable) -> QueryTable {
    let expected = &table.expected();
    let file = table.local_file();
    let path = Path::new(&file);
    let damage = match open_verified(path, expected) {
        Ok(t) => return t,
        Err(TableError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(e),
    };
    if let Some(e) = &damage {
        pgrx::log!("lightretriever: {file} is damaged ({e}); writing it again from the database");
    }
    let mut memory = PgMemoryContexts::new("lightretriever materialize");
    let written = lr_table::cache::materialize(
        path,
        || {
            pgrx::check_for_interrupts!();
        },
        |p| open_verified(p, expected).map(drop).map_err(|e| e.to_string()),
        |index| {
            // SAFETY: each chunk's SPI result and copy live in a context reset after it.
            let chunk = unsafe { memory.switch_to(|_| read_chunk(table, index)) };
            unsafe { memory.reset() };
            Ok(chunk)
        },
    );
    match written {
        Ok(lr_table::cache::Materialized::Written(bytes)) => {
            pgrx::log!("lightretriever: wrote {file} ({bytes} bytes) from the database");
            sweep();
        }
        Ok(lr_table::cache::Materialized::AlreadyThere) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A version built before 0.6.0, not stored yet (the library serves 0.5.0's SQL until
            // the update): its file under the name it was built with.
            if let Some(t) = table.own_recorded_file().and_then(|f| open_verified(Path::new(f), expected).ok()) {
                return t;
            }
            let what = match damage {
                Some(e) => format!("lightretriever: {e}"),
                None => format!("lightretriever: query table file {file} is missing"),
            };
            raise(
                Code::ERRCODE_DATA_CORRUPTED,
                format!("{what}, and version {} of the table of \"{}\" has no stored bytes to write it from", table.version, table.model),
                Some("Tables built before lightretriever 0.6.0 are stored by SELECT lightretriever.lr_store_query_tables() on the server that has their files; otherwise rebuild with lightretriever.lr_build_query_table."),
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => raise(
            Code::ERRCODE_DATA_CORRUPTED,
            format!("lightretriever: the stored bytes of version {} of the table of \"{}\" do not verify: {e}", table.version, table.model),
            Some(REBUILD_HINT),
        ),
        Err(e) => raise(Code::ERRCODE_IO_ERROR, format!("lightretriever: cannot write {file}: {e}"), None),
    }
    open_verified(path, expected).or_raise(Code::ERRCODE_DATA_CORRUPTED)
}

/// Removes this database's table files that no catalog row names (versions dropped on another
/// node — a replica replays the drop but not its file removal — or by a transaction that died),
/// once they are [`lr_table::cache::SWEEP_MIN_AGE`] old. The catalog is read in a fresh
/// snapshot: the caller's may be old (a REPEATABLE READ transaction held open), and a version
/// committed since would look unnamed, its file removed for every other backend to write again.
/// Not in a parallel worker or a parallel query's leader, where no new snapshot can be taken:
/// the next write of a file elsewhere sweeps.
fn sweep() {
    if unsafe { pg_sys::IsInParallelMode() } {
        return;
    }
    let keep = named_files_now();
    let prefix = format!("db{}-", database());
    for removed in lr_table::cache::sweep(Path::new(lr_table::TABLE_DIR), &prefix, &keep, lr_table::cache::SWEEP_MIN_AGE) {
        pgrx::log!("lightretriever: removed {}, which no query table version names", removed.display());
    }
}

/// The file names of the versions the catalog has now, in the latest snapshot. Read-only SPI
/// uses the snapshot pushed here; pgrx's SPI reads do not once the transaction has written
/// (they take the transaction's snapshot, which under REPEATABLE READ is its first).
fn named_files_now() -> HashSet<String> {
    let mut keep = HashSet::new();
    unsafe {
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        Spi::connect(|_| {
            let found = pg_sys::SPI_execute(
                c"SELECT model, instruction, version::pg_catalog.text, checksum FROM lightretriever.lr_query_tables".as_ptr(),
                true,
                0,
            );
            if found == pg_sys::SPI_OK_SELECT as i32 && !pg_sys::SPI_tuptable.is_null() {
                let table = &*pg_sys::SPI_tuptable;
                let value = |row: *mut pg_sys::HeapTupleData, column: i32| -> String {
                    let v = pg_sys::SPI_getvalue(row, table.tupdesc, column);
                    if v.is_null() { String::new() } else { std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned() }
                };
                for i in 0..table.numvals as usize {
                    let row = *table.vals.add(i);
                    let stored = StoredTable {
                        model: value(row, 1),
                        instruction: value(row, 2),
                        version: value(row, 3).parse().unwrap_or_default(),
                        checksum: u64::from_str_radix(&value(row, 4), 16).unwrap_or(0),
                        file: String::new(),
                        rows: 0,
                        dims: 0,
                    };
                    keep.insert(stored.local_file().rsplit('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        pg_sys::PopActiveSnapshot();
    }
    keep
}

/// The table versions in the catalog: of `model` (every model: None); `unstored_only`, those
/// without stored bytes (built before 0.6.0).
pub fn versions(model: Option<&str>, unstored_only: bool) -> Vec<StoredTable> {
    let unstored = if unstored_only {
        "AND NOT EXISTS (SELECT FROM lightretriever.lr_query_table_chunks c
                          WHERE c.model OPERATOR(pg_catalog.=) t.model AND c.instruction OPERATOR(pg_catalog.=) t.instruction
                            AND c.version OPERATOR(pg_catalog.=) t.version)"
    } else {
        ""
    };
    Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT t.model, t.instruction, t.version, t.checksum, t.file, t.rows, t.dims FROM lightretriever.lr_query_tables t
                  WHERE ($1 IS NULL OR t.model OPERATOR(pg_catalog.=) $1) {unstored} ORDER BY 1, 2, 3"
            ),
            None,
            &[model.into()],
        )?
        .map(|r| {
            Ok(StoredTable {
                model: r.get::<String>(1)?.unwrap_or_default(),
                instruction: r.get::<String>(2)?.unwrap_or_default(),
                version: r.get::<i32>(3)?.unwrap_or_default(),
                checksum: u64::from_str_radix(&r.get::<String>(4)?.unwrap_or_default(), 16).unwrap_or(0),
                file: r.get::<String>(5)?.unwrap_or_default(),
                rows: r.get::<i64>(6)?.unwrap_or(0) as usize,
                dims: r.get::<i32>(7)?.unwrap_or(0) as usize,
            })
        })
        .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}
