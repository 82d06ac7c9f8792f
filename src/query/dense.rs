//! The dense query side: `lr_encode_query`, the mean of per-token rows of the query table,
//! inside the backend (no model, no inference, a shared read-only mapping).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use lr_table::LookupEncoder;
use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::guc::resolve_model;
use crate::pgvector::Vector;

use crate::catalog::query_tables::instruction_key;
use crate::catalog::table_store::{self, StoredTable};
use crate::statement::{statement_key, LastAnswer, PerStatement, StatementKey};

struct CachedLookup {
    /// The lr_query_tables row version (xmin/ctid) the table was opened for.
    row: String,
    /// The statement in which the file was last seen unchanged (fstat once per statement).
    checked: StatementKey,
    encoder: Rc<LookupEncoder>,
}

thread_local! {
    /// Open tables by (model, instruction); the mapping is shared with every other backend
    /// through the page cache.
    static LOOKUPS: RefCell<HashMap<(String, String), CachedLookup>> = RefCell::new(HashMap::new());
    /// The last answer, valid for one statement (the function is STABLE): a sequential scan
    /// ordering by `embedding <#> lr_encode_query('...')` asks once per row.
    static LAST: LastAnswer<(String, String, String), Vec<f32>> = const { LastAnswer::new() };
}

/// Opens this node's file of the table the catalog row describes (written from the stored bytes
/// if it is missing or damaged): header, size and data checksum are verified (lr-table), then
/// the checksum, model, instruction and shape against the catalog (a table of another model
/// copied in place is refused), then the tokenizer it was built with.
fn open_table(table: &StoredTable) -> LookupEncoder {
    let model = table.model.as_str();
    let table = table_store::open_table(table);
    let meta = table.meta().or_raise(Code::ERRCODE_DATA_CORRUPTED);
    // The adapter's tokenizer when a LoRA adapter ships one (the released ones lowercase).
    let tokenizer_path = crate::catalog::load_model(model).tokenizer_path();
    let fingerprint = lr_table::fingerprint_file(&tokenizer_path).unwrap_or_else(|e| {
        raise(
            Code::ERRCODE_UNDEFINED_FILE,
            format!("lightretriever: the tokenizer of \"{model}\" cannot be read on this server: {e}"),
            Some("Every server that answers queries needs the model's directory at the path it was registered with (lightretriever.lr_models.path), as it needs the extension's files."),
        )
    });
    if fingerprint != meta.tokenizer_fingerprint {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: {} has changed since the query table of \"{model}\" was built", tokenizer_path.display()),
            Some("Rebuild the table with lightretriever.lr_build_query_table."),
        );
    }
    LookupEncoder::new(table, super::query_tokenizer(&tokenizer_path))
}

/// Forgets this backend's open table of (model, instruction) (its file changed under it).
fn forget_lookup(model: &str, instruction: &str) {
    LOOKUPS.with(|m| m.borrow_mut().remove(&(model.to_owned(), instruction.to_owned())));
}

/// The catalog row of the newest table of a (model, instruction).
#[derive(Clone)]
struct TableRow {
    version: i32,
    file: String,
    /// Its row version (xmin/ctid): a rebuild, drop or rollback gives another.
    row: String,
    checksum: String,
    rows: i64,
    dims: i32,
}

const NEWEST_TABLE_SQL: &str = "SELECT t.version, t.file, t.xmin::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) t.ctid::pg_catalog.text,
        t.checksum, t.rows, t.dims
   FROM lightretriever.lr_query_tables t
   JOIN lightretriever.lr_models m ON m.name OPERATOR(pg_catalog.=) t.model
  WHERE t.model OPERATOR(pg_catalog.=) $1 AND t.instruction OPERATOR(pg_catalog.=) $2
  ORDER BY t.version DESC LIMIT 1";

thread_local! {
    /// The catalog's answer per (model, instruction), valid for the statement that read it: the
    /// statement's snapshot decides which table it uses, so nothing carried over from another
    /// statement can be stale (a rebuild, drop or rollback elsewhere is seen by the next
    /// statement, as a catalog read would see it), and a statement calling once per row reads
    /// the catalog once.
    static RESOLVED: PerStatement<(String, String), Option<TableRow>> = PerStatement::new();
}

/// The newest table of (model, instruction) as this statement sees the catalog.
fn newest_table(model: &str, instruction: &str, statement: StatementKey) -> Option<TableRow> {
    RESOLVED.with(|r| r.get_or_compute((model.to_owned(), instruction.to_owned()), statement, || read_newest_table(model, instruction)))
}

fn read_newest_table(model: &str, instruction: &str) -> Option<TableRow> {
    Spi::connect(|c| {
        let mut rows = crate::spi::select_kept(&c, NEWEST_TABLE_SQL, None, &[model.into(), instruction.into()])?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => Some(TableRow {
                version: r.get::<i32>(1)?.unwrap_or_default(),
                file: r.get::<String>(2)?.unwrap_or_default(),
                row: r.get::<String>(3)?.unwrap_or_default(),
                checksum: r.get::<String>(4)?.unwrap_or_default(),
                rows: r.get::<i64>(5)?.unwrap_or(0),
                dims: r.get::<i32>(6)?.unwrap_or(0),
            }),
            None => None,
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The lookup encoder for the newest table of (model, instruction). A table already open in
/// this backend is checked once per statement (fstat: truncated, replaced or modified files are
/// noticed and re-opened — verified again, and written again from the database when damaged,
/// never wrong vectors; a read fault on a truncated mapping is caught by lr-table's SIGBUS guard).
fn lookup_encoder(model: &str, instruction: &str, statement: StatementKey) -> Rc<LookupEncoder> {
    let Some(TableRow { version, file, row, checksum, rows, dims }) = newest_table(model, instruction, statement) else {
        crate::catalog::load_model(model); // a missing model is its own error
        let call = if instruction.is_empty() {
            format!("SELECT lightretriever.lr_build_query_table('{model}')")
        } else {
            format!("SELECT lightretriever.lr_build_query_table('{model}', instruction => ...)")
        };
        raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!(
                "lightretriever: model \"{model}\" has no query table{}",
                if instruction.is_empty() { String::new() } else { format!(" for instruction \"{instruction}\"") }
            ),
            Some(&crate::catalog::nodes::worker_hint().map_or_else(|| format!("Build it once (as a superuser) with {call}."), str::to_owned)),
        )
    };
    let key = (model.to_owned(), instruction.to_owned());
    // The catalog row identifies the table (file names are unique per build too).
    let cached = LOOKUPS.with(|m| m.borrow().get(&key).filter(|c| c.row == row).map(|c| (c.checked, c.encoder.clone())));
    if let Some((checked, enc)) = cached {
        if checked == statement {
            return enc;
        }
        if enc.check_unchanged().is_ok() {
            LOOKUPS.with(|m| m.borrow_mut().get_mut(&key).map(|c| c.checked = statement));
            return enc;
        }
        forget_lookup(model, instruction); // changed on disk: open it again, and verify it again
    }
    let stored = StoredTable {
        model: model.to_owned(),
        instruction: instruction.to_owned(),
        version,
        checksum: u64::from_str_radix(&checksum, 16).unwrap_or(0),
        file,
        rows: rows as usize,
        dims: dims as usize,
    };
    let enc = Rc::new(open_table(&stored));
    LOOKUPS.with(|m| m.borrow_mut().insert(key, CachedLookup { row, checked: statement, encoder: enc.clone() }));
    enc
}

/// Encodes a query by table lookup: tokens (no special tokens, at most 512) → mean of their
/// rows → L2-normalised. No model weights are touched. NULL query gives NULL.
#[pg_extern(stable, parallel_safe, cost = 200)]
fn lr_encode_query(
    query: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    instruction: default!(Option<&str>, "NULL"),
) -> Option<Vector> {
    Some(Vector(encode_query(query?, model, instruction)))
}

/// The lookup encoding of `query` (shared by `lr_encode_query` and `lr_search`).
pub fn encode_query(query: &str, model: Option<&str>, instruction: Option<&str>) -> Vec<f32> {
    let model = resolve_model(model);
    let instruction = instruction_key(instruction.filter(|s| !s.is_empty())).to_owned();
    let statement = statement_key();
    if let Some(v) = LAST.with(|l| l.get(statement, |(q, m, i)| q == query && *m == model && *i == instruction)) {
        return v;
    }
    let mut encoded = lookup_encoder(&model, &instruction, statement).encode(query);
    if matches!(encoded, Err(lr_table::LookupError::TableChanged(_))) {
        // The mapping read a page the file no longer has: open the file again (and verify it).
        forget_lookup(&model, &instruction);
        encoded = lookup_encoder(&model, &instruction, statement).encode(query);
    }
    let v = encoded.unwrap_or_else(|e| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: cannot encode the query: {e}"),
            matches!(e, lr_table::LookupError::NoTokens)
                .then_some("A query needs at least one token; empty or blank text has none."),
        )
    });
    LAST.with(|l| l.set(statement, (query.to_owned(), model, instruction), v.clone()));
    v
}

