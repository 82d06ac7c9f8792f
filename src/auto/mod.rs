//! Enabling a table for auto-encoding: `lr_enable_auto_encoding` adds the vector column(s),
//! the queue and the triggers and enqueues every row; `lr_disable_auto_encoding` undoes it.
//! The worker (`worker.rs`) drains the queues. The SQL itself is built by `lr-queue`.
//!
//! Queue semantics (documented in the README): insert → enqueue; update → enqueue only if the
//! text changed, and the stale vector is cleared at once (NULL until re-encoded); NULL text →
//! NULL vector, nothing queued; delete → its queue entries (failed ones too) go; TRUNCATE → the
//! table's entries go.
//!
//! Security (README "Security"): these functions run as the extension's owner but never touch
//! the user's table with those rights: its rows are read as the owner (`security::as_owner`),
//! keys are text written by output functions, the queue holds no user type. The status and
//! failed-rows views show a caller only the tables it owns or may read.

use lr_queue::Encoding;
use pgrx::prelude::*;

use crate::columns::TEXT_TYPES;
use crate::error::{raise, required, row_or_none, Code, OrRaise};
use crate::security::require_owner;
use crate::spi::table_name;

/// The catalog row of one auto-encoded table, as the worker and the functions here use it.
#[derive(Debug, Clone)]
pub struct AutoEncoding {
    pub id: i32,
    pub source: pg_sys::Oid,
    /// `source::regclass::text`: quoted and schema-qualified as needed.
    pub source_name: String,
    /// A plain table (its own rows, `ONLY`); false for a partitioned one.
    pub plain: bool,
    pub text_column: String,
    pub key_columns: Vec<String>,
    /// The key columns' types as SQL names them: empty but in a worker batch, which pins them
    /// ([`crate::security::pin_key_types`]) for the statements that cast key text to them.
    pub key_types: Vec<String>,
    /// The key columns' numbers, in key order.
    pub key_attnums: Vec<i16>,
    pub model: String,
    pub sparse_model: Option<String>,
    pub vector_column: String,
    pub sparse_column: Option<String>,
    pub batch_size: i32,
    /// 'active', or 'paused' (`lr_pause_auto_encoding`: queued, not drained).
    pub status: String,
    /// The schema of its queue: `lightretriever_queues` (0.11.0 on), `lightretriever` before
    /// the update to 0.11.0, which moves the queues.
    pub queue_schema: &'static str,
    /// A Citus distributed table: its pending rows are found in the table (a text, no vector),
    /// not in the queue, which keeps only the keys that failed (lr-queue, "Citus").
    pub distributed: bool,
}

impl AutoEncoding {
    /// This encoding with the table's name as of now, for a read that follows at once
    /// ([`crate::security::current_name`]); None when the table is gone.
    pub fn named_now(&self) -> Option<AutoEncoding> {
        crate::security::current_name(self.source).map(|source_name| AutoEncoding { source_name, ..self.clone() })
    }

    /// The statements of this table (lr-queue).
    pub fn statements(&self) -> Encoding<'_> {
        Encoding {
            id: self.id,
            source: &self.source_name,
            plain: self.plain,
            text_column: &self.text_column,
            key_columns: &self.key_columns,
            key_types: &self.key_types,
            queue_schema: self.queue_schema,
            vector_column: &self.vector_column,
            sparse_column: self.sparse_column.as_deref(),
        }
    }
}

/// The queues' schema: `lightretriever_queues` once it is the extension's (its member: no other
/// role can make a schema of that name count), else the one they had before 0.11.0. From the
/// catalog as it is now (not the caller's snapshot): a REPEATABLE READ transaction begun before
/// the update must not create a queue where the library no longer looks.
pub fn queue_schema() -> &'static str {
    let (schema, extension) = unsafe {
        (pg_sys::get_namespace_oid(c"lightretriever_queues".as_ptr(), true), pg_sys::get_extension_oid(c"lightretriever".as_ptr(), true))
    };
    let member = schema != pg_sys::InvalidOid
        && extension != pg_sys::InvalidOid
        && unsafe { pg_sys::getExtensionOfObject(pg_sys::NamespaceRelationId, schema) } == extension;
    if member {
        lr_queue::QUEUE_SCHEMA
    } else {
        lr_queue::QUEUE_SCHEMA_BEFORE_0_11
    }
}

/// The auto-encodings' query with `$filter` (a literal: every text is fixed, so its plan is kept).
macro_rules! select_encodings {
    ($filter:literal) => {
        concat!("SELECT a.id, a.source::pg_catalog.oid, a.source::pg_catalog.text,
        c.relkind OPERATOR(pg_catalog.=) 'r', a.text_column::pg_catalog.text, a.key_columns::pg_catalog.text[],
        a.model, a.sparse_model, a.vector_column::pg_catalog.text, a.sparse_column::pg_catalog.text, a.batch_size,
        a.status, a.key_attnums
   FROM lightretriever.lr_auto_encodings a JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.source", $filter, " ORDER BY a.id")
    };
}

/// Which auto-encodings [`encodings`] reads (those the caller may see: the catalog's row-level
/// security).
pub enum Encodings {
    All,
    Active,
    WithId(i32),
    Of(pg_sys::Oid),
}

/// Auto-encodings, by id.
pub fn encodings(which: Encodings) -> Vec<AutoEncoding> {
    let (sql, args): (&'static str, Vec<pgrx::datum::DatumWithOid>) = match which {
        Encodings::All => (select_encodings!(""), vec![]),
        Encodings::Active => (select_encodings!(" WHERE a.status OPERATOR(pg_catalog.=) 'active'"), vec![]),
        Encodings::WithId(id) => (select_encodings!(" WHERE a.id OPERATOR(pg_catalog.=) $1"), vec![id.into()]),
        Encodings::Of(relid) => (select_encodings!(" WHERE a.source OPERATOR(pg_catalog.=) $1::pg_catalog.oid"), vec![relid.into()]),
    };
    let queue_schema = queue_schema();
    let encodings = Spi::connect(|c| {
        let rows = crate::spi::select_kept(&c, sql, None, &args)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(AutoEncoding {
                id: r.get(1)?.unwrap_or_default(),
                source: r.get(2)?.unwrap_or(pg_sys::InvalidOid),
                source_name: r.get(3)?.unwrap_or_default(),
                plain: r.get(4)?.unwrap_or(true),
                text_column: r.get(5)?.unwrap_or_default(),
                key_columns: r.get(6)?.unwrap_or_default(),
                key_types: Vec::new(),
                model: r.get(7)?.unwrap_or_default(),
                sparse_model: r.get(8)?,
                vector_column: r.get(9)?.unwrap_or_default(),
                sparse_column: r.get(10)?,
                batch_size: r.get(11)?.unwrap_or(32),
                status: r.get(12)?.unwrap_or_default(),
                key_attnums: r.get(13)?.unwrap_or_default(),
                queue_schema,
                distributed: false,
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let distributed = citus_tables();
    encodings.into_iter().map(|e| AutoEncoding { distributed: distributed.contains(&e.source), ..e }).collect()
}

/// The Citus tables of this database by kind (`pg_dist_partition.partmethod`: 'h' hash-distributed,
/// 'n' reference or local tables in Citus's metadata, …); empty without Citus.
pub fn citus_kinds() -> Vec<(pg_sys::Oid, String)> {
    let citus = crate::spi::read_one::<bool>("SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL", &[])
        .ok()
        .flatten()
        == Some(true);
    if !citus {
        return Vec::new();
    }
    Spi::connect(|c| {
        c.select("SELECT logicalrelid::pg_catalog.oid, partmethod::pg_catalog.text FROM pg_catalog.pg_dist_partition", None, &[])?
            .map(|r| Ok((r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), r.get::<String>(2)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The hash-distributed Citus tables of this database.
fn citus_tables() -> Vec<pg_sys::Oid> {
    citus_kinds().into_iter().filter(|(_, kind)| kind == "h").map(|(oid, _)| oid).collect()
}

/// The auto-encoding of `relid`, if it has one.
pub fn encoding_of(relid: pg_sys::Oid) -> Option<AutoEncoding> {
    encodings(Encodings::Of(relid)).pop()
}

/// `source`'s oid and qualified name, for its owner only.
fn owned_table(source: Option<pgrx::PgRelation>) -> (pg_sys::Oid, String) {
    let source = required(source, "source").oid();
    let table = table_name(source);
    require_owner(source, &table);
    (source, table)
}

/// The auto-encoding of `source` as (qualified table name, record), for its owner only; an
/// error when the caller does not own it or it is not auto-encoded.
fn owned_auto_encoding(source: Option<pgrx::PgRelation>) -> (String, AutoEncoding) {
    let (source, table) = owned_table(source);
    let Some(enc) = encoding_of(source) else {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("lightretriever: {table} is not auto-encoded"), None)
    };
    (table, enc)
}

/// A column of a user's table as it is now.
struct Column {
    name: String,
    type_oid: pg_sys::Oid,
    generated: bool,
    typmod: i32,
}

impl Column {
    /// The type's name, for a message ([`crate::spi::type_name_for_message`]); checks compare
    /// `type_oid`.
    fn type_name(&self) -> String {
        crate::spi::type_name_for_message(self.type_oid)
    }
}

/// The column `attnum` of `relid` now.
fn column(relid: pg_sys::Oid, attnum: i16) -> Option<Column> {
    Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT attname::pg_catalog.text, atttypid, attgenerated OPERATOR(pg_catalog.<>) '', atttypmod
               FROM pg_catalog.pg_attribute
              WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attnum OPERATOR(pg_catalog.=) $2 AND NOT attisdropped",
            None,
            &[relid.into(), attnum.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => {
                let type_oid = r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid);
                Some(Column {
                    name: r.get::<String>(1)?.unwrap_or_default(),
                    type_oid,
                    generated: r.get::<bool>(3)?.unwrap_or(false),
                    typmod: r.get::<i32>(4)?.unwrap_or(-1),
                })
            }
            None => None,
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The attnum of column `name` of `relid`, if it has one.
fn attnum_of(relid: pg_sys::Oid, name: &str) -> Option<i16> {
    row_or_none(Spi::get_one_with_args::<i16>(
        "SELECT attnum FROM pg_catalog.pg_attribute
          WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2 AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
        &[relid.into(), name.into()],
    ))
    .flatten()
}

/// The primary key of `relid`: (column names, attnums), in key order.
fn primary_key(relid: pg_sys::Oid) -> (Vec<String>, Vec<i16>) {
    Spi::connect(|c| {
        c.select(
            "SELECT a.attname::pg_catalog.text, a.attnum
               FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_catalog.pg_attribute a ON a.attnum OPERATOR(pg_catalog.=) k.attnum
              WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attrelid OPERATOR(pg_catalog.=) $1
              ORDER BY k.n",
            None,
            &[relid.into()],
        )?
        .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i16>(2)?.unwrap_or_default())))
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .into_iter()
    .unzip()
}

mod enable;
mod follow;
mod status;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

