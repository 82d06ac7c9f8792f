//! LightRetriever query tables: building them (`lr_build_query_table`, full model, superuser)
//! and encoding queries by lookup (`lr_encode_query`: no model, no inference, shared mmap).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use lr_model::{ModelFamily, ModelInfo};
use lr_service::Task;
use lr_table::{Dtype, LookupEncoder, QueryTable, TableMeta, TableWriter};
use pgrx::prelude::*;
use pgrx::{register_xact_callback, search_path, PgXactCallbackEvent};

use crate::error::{raise, require_superuser, required, row_or_none, Code, OrRaise};
use crate::guc::resolve_model;
use crate::pgvector::Vector;

/// Where table files live, relative to the data directory (a backend's working directory).
const TABLE_DIR: &str = "lightretriever/tables";
/// Vocabulary ids per forward pass while building (all inputs are 3 tokens long).
const BUILD_BATCH: usize = 256;

fn instruction_key(instruction: Option<&str>) -> &str {
    instruction.unwrap_or("")
}

/// Refuses an instruction for models that take none (BERT-family encoders).
fn check_instruction(name: &str, info: &lr_model::ModelInfo, instruction: Option<&str>, function: &str) {
    if instruction.is_some() && info.family == ModelFamily::Bert {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("lightretriever: model \"{name}\" is a BERT-family encoder, which takes no instruction"),
            Some(&format!("Call {function} with instruction => NULL; instruction tables need a decoder LLM.")),
        );
    }
}

/// Writes a new table version of (model, instruction) — `fill` streams its rows (and weights)
/// — and records it in `lr_query_tables`. The previous version stays until this transaction
/// commits; a rollback or error removes the new file. Returns (version, file).
fn write_table_version(
    name: &str,
    info: &lr_model::ModelInfo,
    instruction: Option<&str>,
    method: &str,
    build: serde_json::Value,
    dims: usize,
    dtype: Dtype,
    fill: impl FnOnce(&mut TableWriter),
) -> (i32, String) {
    let key = instruction_key(instruction);
    let version = Spi::get_one_with_args::<i32>(
        "SELECT COALESCE(pg_catalog.max(version), 0) OPERATOR(pg_catalog.+) 1 FROM lightretriever.lr_query_tables
          WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2",
        &[name.into(), key.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or(1);
    std::fs::create_dir_all(TABLE_DIR).or_raise(Code::ERRCODE_IO_ERROR);
    // The directory is the cluster's: the database's OID keeps databases apart (the same model
    // name and version in two databases are two files), and a stamp makes every build's name
    // new (a model dropped and built again in one transaction must not have its new file
    // removed by the drop's commit-time cleanup).
    let database = unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ ((std::process::id() as u64) << 40);
    let file = format!(
        "{TABLE_DIR}/db{database}-{name}-{:016x}-v{version}-{stamp:016x}.lrt",
        lr_table::fnv1a64_words(0xcbf2_9ce4_8422_2325, key.as_bytes())
    );
    let tokenizer_fingerprint =
        lr_table::fingerprint_file(&info.tokenizer_path()).or_raise(Code::ERRCODE_IO_ERROR);
    let meta = TableMeta {
        model: name.to_owned(),
        instruction: instruction.map(str::to_owned),
        tokenizer_fingerprint,
        build,
    };
    // A rollback (or an error below) must not leave the new file behind.
    let cleanup = file.clone();
    register_xact_callback(PgXactCallbackEvent::Abort, move || {
        let _ = std::fs::remove_file(&cleanup);
    });
    let mut writer = TableWriter::create(Path::new(&file), &meta, info.vocab_size as u64, dims as u32, dtype)
        .or_raise(Code::ERRCODE_IO_ERROR);
    fill(&mut writer);
    let checksum = writer.finish().or_raise(Code::ERRCODE_IO_ERROR);
    Spi::run_with_args(
        "INSERT INTO lightretriever.lr_query_tables
           (model, instruction, version, file, rows, dims, dtype, checksum, method, build)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            name.into(),
            key.into(),
            version.into(),
            file.as_str().into(),
            (info.vocab_size as i64).into(),
            (dims as i32).into(),
            dtype.name().into(),
            format!("{checksum:016x}").into(),
            method.into(),
            pgrx::JsonB(meta.build.clone()).into(),
        ],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    (version, file)
}

/// Where running builds publish their progress (one file per backend, read by
/// `lr_build_progress`): other sessions cannot see the building transaction's rows.
const PROGRESS_DIR: &str = "lightretriever/progress";

/// This backend's progress file while a table is built; removed when dropped (also on error,
/// as the error unwinds through the build).
struct BuildProgress {
    file: String,
    head: serde_json::Value,
}

impl BuildProgress {
    fn start(model: &str, instruction: Option<&str>, total: usize) -> Self {
        let _ = std::fs::create_dir_all(PROGRESS_DIR);
        let pid = unsafe { pgrx::pg_sys::MyProcPid };
        let started = Spi::get_one::<String>("SELECT pg_catalog.now()::pg_catalog.text").ok().flatten();
        let head = serde_json::json!({"pid": pid, "model": model, "instruction": instruction.unwrap_or(""),
                                      "total": total, "started_at": started});
        let p = BuildProgress { file: format!("{PROGRESS_DIR}/{pid}.json"), head };
        p.update(0);
        p
    }

    fn update(&self, done: usize) {
        let mut v = self.head.clone();
        v["done"] = done.into();
        // Written beside and renamed, so that a reader never sees half a file.
        let tmp = format!("{}.tmp", self.file);
        if std::fs::write(&tmp, v.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
        }
    }
}

impl Drop for BuildProgress {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Table builds running now, in any session: one row per building backend.
#[pg_extern(volatile, parallel_restricted)]
fn lr_build_progress() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(model, String),
        name!(instruction, String),
        name!(done, i64),
        name!(total, i64),
        name!(started_at, Option<String>),
    ),
> {
    // A backend that crashed mid-build leaves its file behind: show live backends only.
    let live: Vec<i32> = Spi::connect(|c| {
        c.select("SELECT pid FROM pg_catalog.pg_stat_activity", None, &[])?
            .map(|r| r.get::<i32>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(PROGRESS_DIR).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(v) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else {
            continue;
        };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let pid = v["pid"].as_i64().unwrap_or(0) as i32;
        if !live.contains(&pid) {
            continue;
        }
        rows.push((
            pid,
            text("model"),
            text("instruction"),
            v["done"].as_i64().unwrap_or(0),
            v["total"].as_i64().unwrap_or(0),
            v["started_at"].as_str().map(str::to_owned),
        ));
    }
    TableIterator::new(rows)
}

/// Rows of the untrained table (each id through the full model, see
/// `DocumentEncoder::table_rows`), streamed in batches, with progress as NOTICEs every 10%
/// and in `lr_build_progress`.
fn untrained_rows(name: &str, info: &ModelInfo, instruction: Option<&str>, rows: usize, mut sink: impl FnMut(&[f32])) {
    let ids: Vec<u32> = (0..rows as u32).collect();
    let progress = BuildProgress::start(name, instruction, rows);
    let mut done = 0;
    let mut next_report = 10;
    for chunk in ids.chunks(BUILD_BATCH) {
        pgrx::check_for_interrupts!();
        let task = Task::TableRows { instruction: instruction.map(str::to_owned), ids: chunk.to_vec() };
        let vectors = crate::inference::dense(name, info, task);
        let flat: Vec<f32> = vectors.into_iter().flatten().collect();
        sink(&flat);
        done += chunk.len();
        progress.update(done);
        let percent = done * 100 / rows;
        if percent >= next_report {
            pgrx::notice!("lightretriever: query table for \"{name}\": {percent}% ({done} of {rows} tokens)");
            next_report = percent / 10 * 10 + 10;
        }
    }
}

/// Builds the query table of `model` for `instruction`: every vocabulary id is encoded alone by
/// the full model (`[CLS] id [SEP]` for BERT-family encoders) and its vector stored as one row.
/// Writes a new table version; the previous one stays until this transaction commits.
/// Returns the number of rows.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_build_query_table(
    model: default!(Option<&str>, "NULL"),
    instruction: default!(Option<&str>, "NULL"),
    dtype: default!(Option<&str>, "'f32'"),
) -> i64 {
    require_superuser("build query tables");
    let dtype = required(dtype, "dtype");
    let name = resolve_model(model);
    // Two builds of one model (or a drop meanwhile) wait for each other.
    crate::catalog::lock_model(&name);
    let info = crate::catalog::load_model(&name);
    let instruction = instruction.filter(|s| !s.is_empty());
    check_instruction(&name, &info, instruction, "lr_build_query_table");
    let Some(dtype) = Dtype::parse(dtype) else {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: dtype \"{dtype}\" is not f32 or f16"),
            Some("f16 halves the table (and its page-cache footprint) for large LLM vocabularies."),
        )
    };
    let build = serde_json::json!({"method": "token_forward", "input": lr_model::table_input(&info, instruction), "pooling": info.pooling.as_str()});
    write_table_version(&name, &info, instruction, "token_forward", build, info.hidden_size, dtype, |writer| {
        untrained_rows(&name, &info, instruction, info.vocab_size, |rows| writer.write_rows(rows).or_raise(Code::ERRCODE_IO_ERROR));
    });
    info.vocab_size as i64
}

/// Fits a new version of the query table of `model` to its own document encoder on the texts
/// of `source.text_column` — no labels: pseudo-queries are spans of those texts, their targets
/// the full model's encodings (lr-fit). The fit starts from, and is regularised toward, the
/// untrained table (the newest `token_forward` version, built in memory if there is none).
/// Returns the fit's report (pairs, loss and held-out agreement before/after, seconds).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_fit_query_table(
    model: Option<&str>,
    source: Option<pgrx::PgRelation>,
    text_column: Option<&str>,
    instruction: default!(Option<&str>, "NULL"),
    options: default!(Option<pgrx::JsonB>, "'{}'"),
    vector_column: default!(Option<&str>, "NULL"),
) -> pgrx::JsonB {
    require_superuser("fit query tables");
    let (model, source) = (required(model, "model"), required(source, "source"));
    let (text_column, options) = (required(text_column, "text_column"), required(options, "options"));
    crate::catalog::lock_model(model);
    let info = crate::catalog::load_model(model);
    let instruction = instruction.filter(|s| !s.is_empty());
    check_instruction(model, &info, instruction, "lr_fit_query_table");
    let fit_options = lr_fit::FitOptions::from_json(&options.0).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let relid = source.oid();
    drop(source);
    let (texts, doc_vectors) = crate::corpus::corpus_rows(relid, text_column, vector_column);
    let encoder = WorkerSpans { name: model, info: &info };
    let dims = info.hidden_size;
    let vocab = info.vocab_size;

    // The prior: the newest untrained table's rows, else computed now.
    let untrained = row_or_none(Spi::get_two_with_args::<String, String>(
        "SELECT file, checksum FROM lightretriever.lr_query_tables
          WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2
            AND method OPERATOR(pg_catalog.=) 'token_forward'
          ORDER BY version DESC LIMIT 1",
        &[model.into(), instruction_key(instruction).into()],
    ))
    .and_then(|(f, c)| Some((f?, c?)));
    let mut init_rows = vec![0.0f32; vocab * dims];
    match untrained {
        Some((file, checksum)) => {
            let table = QueryTable::open(Path::new(&file)).or_raise(Code::ERRCODE_DATA_CORRUPTED);
            let expected = lr_table::Expected {
                checksum: u64::from_str_radix(&checksum, 16).unwrap_or(0),
                model: model.to_owned(),
                instruction: instruction.map(str::to_owned),
                rows: vocab,
                dims,
            };
            table.verify_against(&expected).or_raise(Code::ERRCODE_DATA_CORRUPTED);
            for (id, row) in init_rows.chunks_mut(dims).enumerate() {
                table.add_row_to(id, 1.0, row);
            }
            if table.is_damaged() {
                raise(Code::ERRCODE_DATA_CORRUPTED, format!("lightretriever: {file} changed while it was read"), Some(REBUILD_HINT));
            }
        }
        None => {
            let mut at = 0;
            untrained_rows(model, &info, instruction, vocab, |rows| {
                init_rows[at..at + rows.len()].copy_from_slice(rows);
                at += rows.len();
            });
        }
    }

    let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), None).or_raise(Code::ERRCODE_IO_ERROR);
    let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut last_notice = -1.0f64;
    let mut progress = |stage: &str, fraction: f64| {
        pgrx::check_for_interrupts!();
        if fraction >= last_notice + 0.1 || fraction >= 1.0 && last_notice < 1.0 {
            pgrx::notice!("lightretriever: fitting \"{model}\": {stage} {:.0}%", fraction * 100.0);
            last_notice = fraction;
        }
    };
    if let Some(v) = doc_vectors.as_ref().and_then(|vs| vs.iter().find(|v| v.len() != dims)) {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: vector_column holds {}-dimensional vectors; model \"{model}\" has {dims}", v.len()),
            Some("Pass the column holding this model's lr_encode_document vectors, or none."),
        );
    }
    let fitted = lr_fit::fit_query_table_with_doc_vectors(
        &docs,
        doc_vectors.as_deref(),
        &tokenizer,
        &encoder,
        &init_rows,
        dims,
        &fit_options,
        &mut progress,
    )
    .or_raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
    drop(init_rows);
    let mut report = serde_json::to_value(&fitted.report).or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let build = serde_json::json!({"method": "fit", "source": texts.len(), "report": report.clone()});
    let (version, file) = write_table_version(model, &info, instruction, "fit", build, dims, Dtype::F32, |writer| {
        writer.write_rows(&fitted.rows).or_raise(Code::ERRCODE_IO_ERROR);
        if let Some(weights) = &fitted.weights {
            writer.write_weights(weights).or_raise(Code::ERRCODE_IO_ERROR);
        }
    });
    if let Some(obj) = report.as_object_mut() {
        obj.insert("version".into(), version.into());
        obj.insert("file".into(), file.into());
        obj.insert("documents".into(), texts.len().into());
    }
    pgrx::JsonB(report)
}

/// The fit's span encoder: the model in the encoder worker (or this backend, if allowed).
struct WorkerSpans<'a> {
    name: &'a str,
    info: &'a ModelInfo,
}

impl lr_fit::SpanEncoder for WorkerSpans<'_> {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        pgrx::check_for_interrupts!();
        Ok(crate::inference::dense(self.name, self.info, Task::Spans { texts: texts.iter().map(|t| t.to_string()).collect() }))
    }
}

/// Identifies one statement's view of the catalog: its start time, the command counter (a
/// table built earlier in the same top-level statement bumps it) and the local transaction id
/// (a `DO` block that COMMITs runs one statement over several transactions, whose command
/// counters start again at 0).
type StatementKey = (i64, u32, u32);

fn statement_key() -> StatementKey {
    // SAFETY: MyProc is this backend's own PGPROC, valid for the backend's life.
    unsafe {
        #[cfg(not(feature = "pg17"))]
        let lxid = (*pg_sys::MyProc).lxid;
        #[cfg(feature = "pg17")]
        let lxid = (*pg_sys::MyProc).vxid.lxid;
        (pg_sys::GetCurrentStatementStartTimestamp(), pg_sys::GetCurrentCommandId(false), lxid)
    }
}

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
    static LAST: RefCell<Option<(StatementKey, String, String, String, Vec<f32>)>> = const { RefCell::new(None) };
}

const REBUILD_HINT: &str =
    "Table files are not part of backups or replicas, and must not be changed by hand: rebuild with lightretriever.lr_build_query_table.";

/// Opens `file` as the table the catalog row describes: header, size and data checksum are
/// verified (lr-table), then the checksum, model, instruction and shape against the catalog (a
/// table of another model copied in place is refused), then the tokenizer it was built with.
fn open_table(model: &str, instruction: &str, file: &str, expected: lr_table::Expected) -> LookupEncoder {
    let table = QueryTable::open(&PathBuf::from(file))
        .unwrap_or_else(|e| raise(Code::ERRCODE_DATA_CORRUPTED, format!("lightretriever: {e}"), Some(REBUILD_HINT)));
    table.verify_against(&expected).unwrap_or_else(|e| raise(Code::ERRCODE_DATA_CORRUPTED, format!("lightretriever: {e}"), Some(REBUILD_HINT)));
    let meta = table.meta().or_raise(Code::ERRCODE_DATA_CORRUPTED);
    // The adapter's tokenizer when a LoRA adapter ships one (the released ones lowercase).
    let tokenizer_path = crate::catalog::load_model(model).tokenizer_path();
    let fingerprint = lr_table::fingerprint_file(&tokenizer_path).or_raise(Code::ERRCODE_IO_ERROR);
    if fingerprint != meta.tokenizer_fingerprint {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: {} has changed since the query table of \"{model}\" was built", tokenizer_path.display()),
            Some("Rebuild the table with lightretriever.lr_build_query_table."),
        );
    }
    let _ = instruction;
    let tokenizer = lr_tokenizer::load_tokenizer(&tokenizer_path, None).or_raise(Code::ERRCODE_IO_ERROR);
    LookupEncoder::new(table, tokenizer)
}

/// Forgets this backend's open table of (model, instruction) (its file changed under it).
fn forget_lookup(model: &str, instruction: &str) {
    LOOKUPS.with(|m| m.borrow_mut().remove(&(model.to_owned(), instruction.to_owned())));
}

/// The lookup encoder for the newest table of (model, instruction). A table already open in
/// this backend is checked once per statement (fstat: truncated, replaced or modified files are
/// noticed and re-opened — and then verified again, so a damaged file is an error, never wrong
/// vectors; a read fault on a truncated mapping is caught by lr-table's SIGBUS guard).
fn lookup_encoder(model: &str, instruction: &str, statement: StatementKey) -> Rc<LookupEncoder> {
    let found = Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT t.file, t.xmin::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) t.ctid::pg_catalog.text,
                    t.checksum, t.rows, t.dims
               FROM lightretriever.lr_query_tables t
               JOIN lightretriever.lr_models m ON m.name OPERATOR(pg_catalog.=) t.model
              WHERE t.model OPERATOR(pg_catalog.=) $1 AND t.instruction OPERATOR(pg_catalog.=) $2
              ORDER BY t.version DESC LIMIT 1",
            None,
            &[model.into(), instruction.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<i64>(4)?.unwrap_or(0),
                r.get::<i32>(5)?.unwrap_or(0),
            )),
            None => None,
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let Some((file, row, checksum, rows, dims)) = found else {
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
            Some(&format!("Build it once (as a superuser) with {call}.")),
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
    let expected = lr_table::Expected {
        checksum: u64::from_str_radix(&checksum, 16).unwrap_or(0),
        model: model.to_owned(),
        instruction: (!instruction.is_empty()).then(|| instruction.to_owned()),
        rows: rows as usize,
        dims: dims as usize,
    };
    let enc = Rc::new(open_table(model, instruction, &file, expected));
    LOOKUPS.with(|m| m.borrow_mut().insert(key, CachedLookup { row, checked: statement, encoder: enc.clone() }));
    enc
}

/// Encodes a query by table lookup: tokens (no special tokens, at most 512) → mean of their
/// rows → L2-normalised. No model weights are touched. NULL query gives NULL.
#[pg_extern(stable, parallel_safe)]
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
    let hit = LAST.with(|l| {
        l.borrow().as_ref().and_then(|(ts, q, m, i, v)| {
            (*ts == statement && q == query && *m == model && *i == instruction).then(|| v.clone())
        })
    });
    if let Some(v) = hit {
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
    LAST.with(|l| *l.borrow_mut() = Some((statement, query.to_owned(), model, instruction, v.clone())));
    v
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgvector::Vector;
    use crate::test_support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn built_table_matches_reference_and_serves_hnsw_search() {
        register_dense_model();
        let rows = Spi::get_one::<i64>("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        assert_eq!(rows, Some(30522));
        let meta = Spi::get_three::<i32, i32, String>(
            "SELECT version, dims, method FROM lightretriever.lr_query_tables WHERE model = 'minilm'",
        )
        .unwrap();
        assert_eq!(meta, (Some(1), Some(384), Some("token_forward".into())));

        let r = reference();
        for q in r["lookup_queries"].as_array().unwrap() {
            let text = q["text"].as_str().unwrap();
            if q["embedding"].is_null() {
                continue; // no tokens: an error, tested on its own (tests/e2e)
            }
            let v = Spi::get_one_with_args::<Vector>("SELECT lightretriever.lr_encode_query($1, 'minilm')", &[text.into()])
                .unwrap()
                .unwrap();
            assert_matches(&v.0, &floats(&q["embedding"]), text);
        }

        // ORDER BY <#> lr_encode_query(...) LIMIT k is answered by an HNSW index.
        Spi::run("CREATE TEMP TABLE docs (id int PRIMARY KEY, body text, emb vector(384))").unwrap();
        for (i, s) in r["sentences"].as_array().unwrap().iter().enumerate() {
            Spi::run_with_args(
                "INSERT INTO docs VALUES ($1, $2, lightretriever.lr_encode_document($2, 'minilm'))",
                &[(i as i32).into(), s["text"].as_str().unwrap().into()],
            )
            .unwrap();
        }
        Spi::run("CREATE INDEX docs_emb_hnsw ON docs USING hnsw (emb vector_ip_ops)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        let search = "SELECT id FROM docs ORDER BY emb <#> lightretriever.lr_encode_query('a man eating food', 'minilm') LIMIT 3";
        let plan = Spi::explain(search).unwrap().0.to_string();
        assert!(plan.contains("Index Scan") && plan.contains("docs_emb_hnsw"), "{plan}");
        let by_index: Vec<i32> = Spi::connect(|c| {
            c.select(search, None, &[]).unwrap().map(|r| r.get::<i32>(1).unwrap().unwrap()).collect()
        });
        Spi::run("SET LOCAL enable_indexscan = off").unwrap();
        Spi::run("SET LOCAL enable_seqscan = on").unwrap();
        let exact: Vec<i32> = Spi::connect(|c| {
            c.select(search, None, &[]).unwrap().map(|r| r.get::<i32>(1).unwrap().unwrap()).collect()
        });
        assert_eq!(by_index, exact);
        assert_eq!(exact.len(), 3);
    }

    /// Fitting on a small corpus writes version 2 (method fit, with weights), reduces its own
    /// loss, and the lookup then serves the fitted table; a failing fit leaves version 1 alone.
    #[pg_test]
    fn fitting_writes_a_new_version_and_lowers_its_loss() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("CREATE TEMP TABLE corpus (id int PRIMARY KEY, body text)").unwrap();
        let r = reference();
        let sentences: Vec<String> = r["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_owned()).collect();
        for i in 0..60 {
            let text = format!("{} {}", sentences[i % sentences.len()], sentences[(i * 7 + 3) % sentences.len()]);
            Spi::run_with_args("INSERT INTO corpus VALUES ($1, $2)", &[(i as i32).into(), text.into()]).unwrap();
        }
        let before = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('a man eating food', 'minilm')").unwrap().unwrap();
        let report = Spi::get_one::<pgrx::JsonB>(
            r#"SELECT lightretriever.lr_fit_query_table('minilm', 'corpus', 'body', options => '{"spans_per_doc": 4}')"#,
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(report["version"], 2, "{report}");
        let (b, a) = (report["loss_train_before"].as_f64().unwrap(), report["loss_train_after"].as_f64().unwrap());
        assert!(a < b, "loss {b} → {a}");
        let method = Spi::get_one::<String>(
            "SELECT method FROM lightretriever.lr_query_tables WHERE model = 'minilm' ORDER BY version DESC LIMIT 1",
        )
        .unwrap();
        assert_eq!(method.as_deref(), Some("fit"));
        Spi::run("SELECT 1").unwrap(); // a new statement: the lookup memo does not apply
        let after = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_query('a man eating food', 'minilm')").unwrap().unwrap();
        assert!(before.0.iter().zip(&after.0).any(|(x, y)| (x - y).abs() > 1e-3), "the fitted table is used");
        // Bad options fail before anything is written; version 2 stays the newest.
        let bad = PgTryBuilder::new(|| {
            Spi::run(r#"SELECT lightretriever.lr_fit_query_table('minilm', 'corpus', 'body', options => '{"no_such_option": 1}')"#)
                .is_ok()
        })
        .catch_others(|_| false)
        .execute();
        assert!(!bad);
    }

    #[pg_test(error = "lightretriever: model \"minilm\" has no query table")]
    fn missing_table_names_the_builder() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_encode_query('anything', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: model \"minilm\" is a BERT-family encoder, which takes no instruction")]
    fn bert_tables_take_no_instruction() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm', 'Given a query')").unwrap();
    }
}
