//! Following `ALTER TABLE` of auto-encoded tables (event trigger): renamed columns are followed,
//! breaking changes refused.

use pgrx::prelude::*;
use pgrx::search_path;

use crate::error::{raise, Code, OrRaise};
use crate::security::elevated;
use crate::spi::{in_subtransaction_cancellable, run};

use super::*;

/// Called by the event triggers for an auto-encoded table that a command changed (named, or
/// `reached` through an inheritance parent, a typed table's type, or a column dropped with
/// another object): follows renames of its columns (catalog names and trigger bodies), and
/// refuses — rolling the command back — what would leave rows that never get vectors or vectors
/// of the wrong shape: a dropped or retyped text or vector column, a dropped or changed primary
/// key. Some commands that reach a table another role may run (a partitioned table's owner drops
/// every partition's primary key; a collation's owner drops it with CASCADE): a table's owner
/// must not be able to block them, so when the role running the command does not have the
/// owner's rights, the table loses its auto-encoding instead (its vectors stay; a WARNING).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_auto_encoding_follow(source: pg_sys::Oid, reached: default!(bool, false)) {
    // The session's role, not the event trigger's (a SECURITY DEFINER function's) owner.
    let invoker = unsafe { pg_sys::GetOuterUserId() };
    if !reached || crate::security::owns(invoker, source) {
        return elevated(|| follow(source));
    }
    match in_subtransaction_cancellable(|| elevated(|| follow(source))) {
        Ok(()) => {}
        Err((PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST, refusal)) => {
            let Some(enc) = encoding_of(source) else { return };
            elevated(|| Spi::run_with_args("SELECT lightretriever.lr_drop_auto_encoding_objects($1)", &[enc.id.into()]))
                .or_raise(Code::ERRCODE_INTERNAL_ERROR);
            pgrx::warning!(
                "lightretriever: {} lost a column or key it is auto-encoded by to another role's command: its auto-encoding is disabled, its vectors are kept ({refusal})",
                enc.source_name
            );
        }
        Err((_, message)) => raise(Code::ERRCODE_INTERNAL_ERROR, message, None),
    }
}

fn follow(source: pg_sys::Oid) {
    let Some(enc) = encoding_of(source) else { return };
    let attnums = Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT text_attnum, key_attnums, vector_attnum, sparse_attnum FROM lightretriever.lr_auto_encodings WHERE id OPERATOR(pg_catalog.=) $1",
            None,
            &[enc.id.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => Some((r.get::<i16>(1)?, r.get::<Vec<i16>>(2)?, r.get::<i16>(3)?, r.get::<i16>(4)?)),
            None => None,
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let Some((Some(text_attnum), Some(key_attnums), Some(vector_attnum), sparse_attnum)) = attnums else { return };
    let refuse = |what: String| -> ! {
        raise(
            Code::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("lightretriever: {} is auto-encoded: {what}", enc.source_name),
            Some(&format!(
                "Disable auto-encoding first: SELECT lightretriever.lr_disable_auto_encoding('{}');",
                enc.source_name.replace('\'', "''")
            )),
        )
    };
    let text = match column(source, text_attnum) {
        Some(c) if TEXT_TYPES.contains(&c.type_oid) && !c.generated => c.name,
        Some(c) => refuse(format!("its text column \"{}\" cannot become {} (or generated)", c.name, c.type_name())),
        None => refuse(format!("its text column \"{}\" cannot be dropped", enc.text_column)),
    };
    let vector_type = |column: Option<Column>, kind: &str, old: &str, model: &str| -> String {
        let dims = crate::catalog::load_model(model);
        let want = if kind == "vector" { dims.hidden_size } else { dims.vocab_size } as i32;
        match column {
            Some(c) if c.type_oid == crate::pgvector::pgvector_type_oid(kind) && c.typmod == want => c.name,
            Some(c) => refuse(format!("its {kind} column \"{}\" must stay {kind}({want}), not {}({})", c.name, c.type_name(), c.typmod)),
            None => refuse(format!("its {kind} column \"{old}\" cannot be dropped")),
        }
    };
    let vector = vector_type(column(source, vector_attnum), "vector", &enc.vector_column, &enc.model);
    let sparse = match (sparse_attnum, &enc.sparse_column, &enc.sparse_model) {
        (Some(a), Some(old), Some(m)) => Some(vector_type(column(source, a), "sparsevec", old, m)),
        _ => None,
    };
    let (key_columns, now_attnums) = primary_key(source);
    if now_attnums != key_attnums {
        refuse(format!("its primary key ({}) cannot be dropped or changed", enc.key_columns.join(", ")));
    }
    if text == enc.text_column && vector == enc.vector_column && sparse == enc.sparse_column && key_columns == enc.key_columns {
        return;
    }
    Spi::run_with_args(
        "UPDATE lightretriever.lr_auto_encodings SET text_column = $2, key_columns = $3, vector_column = $4, sparse_column = $5
          WHERE id OPERATOR(pg_catalog.=) $1",
        &[enc.id.into(), text.as_str().into(), key_columns.into(), vector.as_str().into(), sparse.as_deref().into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let renamed = encoding_of(source).expect("still recorded");
    // (The 0.8.0 update follows every table once, from its script.)
    super::enable::outside_extension_script(|| {
        for sql in renamed.statements().trigger_functions() {
            run(&sql);
        }
        // CREATE OR REPLACE dropped the functions' dependencies on the extension.
        super::enable::record_extension_dependencies(&renamed, false);
    });
}
