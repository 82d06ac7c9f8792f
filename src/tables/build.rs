//! Query tables: building the untrained table (`lr_build_query_table`, every vocabulary id
//! through the full model), the file-and-catalog write every version goes through, and build
//! progress (`lr_build_progress`, `lr_progress`).

use std::path::Path;

use lr_model::ModelInfo;
use lr_service::Task;
use lr_table::{Dtype, TableMeta, TableWriter};
use pgrx::prelude::*;
use pgrx::{register_xact_callback, search_path, PgXactCallbackEvent};

use crate::error::{raise, require_superuser, required, Code, OrRaise};
use crate::guc::resolve_model;

use crate::catalog::query_tables::{check_instruction, instruction_key};
use crate::catalog::table_store::{open_verified, store_chunks, StoredTable};
use super::progress::Progress;

/// Vocabulary ids per forward pass while building (all inputs are 3 tokens long).
const BUILD_BATCH: usize = 256;

/// Writes a new table version of (model, instruction) — `fill` streams its rows (and weights)
/// — and records it in `lr_query_tables`, its bytes in `lr_query_table_chunks`. The previous version stays until this transaction
/// commits; a rollback or error removes the new file. Returns (version, file).
pub(super) fn write_table_version(
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
    std::fs::create_dir_all(lr_table::TABLE_DIR).or_raise(Code::ERRCODE_IO_ERROR);
    let tokenizer_fingerprint =
        lr_table::fingerprint_file(&info.tokenizer_path()).or_raise(Code::ERRCODE_IO_ERROR);
    let meta = TableMeta {
        model: name.to_owned(),
        instruction: instruction.map(str::to_owned),
        tokenizer_fingerprint,
        build,
    };
    // The file's name holds its checksum (lr_table::table_file), known once it is written: it is
    // written under a temporary name of this database's (swept if this backend dies) first.
    let database = unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32();
    let building = lr_table::cache::temporary_name(Path::new(&lr_table::table_file(database, name, key, version, 0)));
    // A rollback (or an error below) must not leave the new file behind.
    let cleanup = building.clone();
    register_xact_callback(PgXactCallbackEvent::Abort, move || {
        let _ = std::fs::remove_file(&cleanup);
    });
    let mut writer = TableWriter::create(&building, &meta, info.vocab_size as u64, dims as u32, dtype)
        .or_raise(Code::ERRCODE_IO_ERROR);
    fill(&mut writer);
    let checksum = writer.finish().or_raise(Code::ERRCODE_IO_ERROR);
    let mut stored = StoredTable {
        model: name.to_owned(),
        instruction: key.to_owned(),
        version,
        checksum,
        file: String::new(),
        rows: info.vocab_size,
        dims,
    };
    let file = stored.local_file();
    stored.file = file.clone();
    std::fs::rename(&building, &file).or_raise(Code::ERRCODE_IO_ERROR);
    let cleanup = file.clone();
    register_xact_callback(PgXactCallbackEvent::Abort, move || {
        let _ = std::fs::remove_file(&cleanup);
    });
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
    // The bytes go into the database too: replicas, dumps and other nodes get the table from there.
    store_chunks(&stored, Path::new(&file));
    (version, file)
}

/// Rows of the untrained table (each id through the full model, see
/// `DocumentEncoder::table_rows`), streamed in batches, with progress as NOTICEs (every 10%,
/// and every 10 s while it moves) and in `lr_progress` / `lr_build_progress`.
pub(super) fn untrained_rows(name: &str, info: &ModelInfo, instruction: Option<&str>, rows: usize, mut sink: impl FnMut(&[f32])) {
    let ids: Vec<u32> = (0..rows as u32).collect();
    let mut progress = Progress::start("build", name, instruction);
    progress.update("encoding vocabulary ids", 0.0, Some((0, rows)));
    let mut done = 0;
    let mut notices = lr_fit::progress::Throttle::new(0.1);
    for chunk in ids.chunks(BUILD_BATCH) {
        pgrx::check_for_interrupts!();
        let task = Task::TableRows { instruction: instruction.map(str::to_owned), ids: chunk.to_vec() };
        let vectors = crate::inference::dense(name, info, task);
        let flat: Vec<f32> = vectors.into_iter().flatten().collect();
        sink(&flat);
        done += chunk.len();
        progress.update("encoding vocabulary ids", done as f64 / rows as f64, Some((done, rows)));
        let percent = done * 100 / rows;
        if notices.due("rows", percent as f64 / 100.0) {
            pgrx::notice!("lightretriever: query table for \"{name}\": {percent}% ({done} of {rows} tokens)");
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
    crate::error::require_primary("build query tables");
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
    let build = serde_json::json!({"method": "token_forward", "input": lr_encoders::table_input(&info, instruction), "pooling": info.pooling.as_str()});
    write_table_version(&name, &info, instruction, "token_forward", build, info.hidden_size, dtype, |writer| {
        untrained_rows(&name, &info, instruction, info.vocab_size, |rows| writer.write_rows(rows).or_raise(Code::ERRCODE_IO_ERROR));
    });
    crate::catalog::nodes::remind_to_sync();
    info.vocab_size as i64
}

/// Stores the bytes of every table version that has none yet — built before 0.6.0, when tables
/// were files of the server that built them — from this server's files, so that replicas,
/// restored dumps and other nodes get them too; `ALTER EXTENSION lightretriever UPDATE` to 0.6.0
/// calls it. A version whose file is missing or damaged here stays as it is, with a WARNING
/// (rebuild it). Returns how many versions it stored.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_store_query_tables() -> i64 {
    require_superuser("store query tables");
    crate::error::require_primary("store query tables");
    let mut stored = 0;
    for table in crate::catalog::table_store::versions(None, true) {
        crate::catalog::lock_model(&table.model);
        let expected = table.expected();
        let local = table.local_file();
        let Some(found) = [local.clone(), table.file.clone()].into_iter().find(|f| open_verified(Path::new(f), &expected).is_ok()) else {
            pgrx::warning!(
                "lightretriever: version {} of the query table of \"{}\" has no intact file on this server, so it was not stored; rebuild it with lightretriever.lr_build_query_table",
                table.version,
                table.model
            );
            continue;
        };
        store_chunks(&table, Path::new(&found));
        if found != local {
            // This database's old file takes the new name; another database's (a restored
            // dump's row names it) is copied, not taken.
            if table.own_recorded_file() == Some(found.as_str()) {
                std::fs::rename(&found, &local).or_raise(Code::ERRCODE_IO_ERROR);
            } else {
                std::fs::copy(&found, &local).or_raise(Code::ERRCODE_IO_ERROR);
            }
        }
        Spi::run_with_args(
            "UPDATE lightretriever.lr_query_tables SET file = $4
              WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2 AND version OPERATOR(pg_catalog.=) $3",
            &[table.model.as_str().into(), table.instruction.as_str().into(), table.version.into(), local.as_str().into()],
        )
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
        stored += 1;
    }
    stored
}
