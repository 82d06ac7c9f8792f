//! Fitting a query table to its own document encoder on a user corpus (`lr_fit_query_table`).

use lr_model::ModelInfo;
use lr_service::Task;
use lr_table::Dtype;
use pgrx::prelude::*;
use pgrx::search_path;

use crate::error::{raise, require_superuser, required, row_or_none, Code, OrRaise};

use crate::catalog::query_tables::{check_instruction, instruction_key, REBUILD_HINT};
use crate::catalog::table_store::{self, StoredTable};
use super::build::{untrained_rows, write_table_version};

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
    crate::error::require_primary("fit query tables");
    let (model, source) = (required(model, "model"), required(source, "source"));
    let (text_column, options) = (required(text_column, "text_column"), required(options, "options"));
    crate::catalog::lock_model(model);
    let info = crate::catalog::load_model(model);
    let instruction = instruction.filter(|s| !s.is_empty());
    check_instruction(model, &info, instruction, "lr_fit_query_table");
    let fit_options = lr_fit::FitOptions::from_json(&options.0).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let relid = source.oid();
    drop(source);
    let mut fit_progress = super::progress::Progress::start("fit", model, instruction);
    fit_progress.update("reading the corpus", 0.0, None);
    let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), None).or_raise(Code::ERRCODE_IO_ERROR);
    // Without stored vectors the fit encodes every document (agreement, refinement), and holds
    // each vector twice (the encoder's answer, the document matrix).
    let computed = if vector_column.is_none() { 2 * 4 * info.hidden_size } else { 0 };
    let (texts, doc_vectors) = super::corpus::corpus_rows(relid, text_column, vector_column, &tokenizer, computed);
    fit_progress.update("preparing the prior", 0.0, None);
    let encoder = WorkerSpans { name: model, info: &info };
    let dims = info.hidden_size;
    let vocab = info.vocab_size;

    // The prior: the newest untrained table's rows, else computed now.
    let untrained = row_or_none(Spi::get_three_with_args::<i32, String, String>(
        "SELECT version, checksum, file FROM lightretriever.lr_query_tables
          WHERE model OPERATOR(pg_catalog.=) $1 AND instruction OPERATOR(pg_catalog.=) $2
            AND method OPERATOR(pg_catalog.=) 'token_forward'
          ORDER BY version DESC LIMIT 1",
        &[model.into(), instruction_key(instruction).into()],
    ))
    .and_then(|(v, c, f)| Some((v?, c?, f?)));
    let mut init_rows = vec![0.0f32; vocab * dims];
    match untrained {
        Some((version, checksum, file)) => {
            let stored = StoredTable {
                model: model.to_owned(),
                instruction: instruction_key(instruction).to_owned(),
                version,
                checksum: u64::from_str_radix(&checksum, 16).unwrap_or(0),
                file,
                rows: vocab,
                dims,
            };
            let table = table_store::open_table(&stored);
            for (id, row) in init_rows.chunks_mut(dims).enumerate() {
                table.add_row_to(id, 1.0, row);
            }
            if table.is_damaged() {
                raise(Code::ERRCODE_DATA_CORRUPTED, format!("lightretriever: {} changed while it was read", stored.local_file()), Some(REBUILD_HINT));
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

    let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut notices = lr_fit::progress::Throttle::new(0.1);
    let mut progress = |stage: &str, fraction: f64| {
        pgrx::check_for_interrupts!();
        fit_progress.update(stage, fraction, None);
        if notices.due(stage, fraction) {
            pgrx::notice!("lightretriever: fitting \"{model}\": {stage} {:.0}%", fraction * 100.0);
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
    fit_progress.update("writing the table", 0.0, None);
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
    crate::catalog::nodes::remind_to_sync();
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

