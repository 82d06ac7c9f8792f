//! pgvector's `vector` and `sparsevec` as Rust values, read and written as pgvector's own varlena
//! (layouts and validation in the pgrx-free `lr-vector` crate). Type OIDs are looked up at run
//! time: pgvector's types have no fixed OIDs.

use std::cell::Cell;

use lr_vector::SparseVector;
use pgrx::prelude::*;
use pgrx::{pg_sys, FromDatum, IntoDatum};

use crate::error::{raise, Code, OrRaise};

/// A pgvector `vector`.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector(pub Vec<f32>);

/// A pgvector `sparsevec`.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseVec(pub SparseVector);

impl_sql_translatable!(Vector, "vector");
impl_sql_translatable!(SparseVec, "sparsevec");

thread_local! {
    static VECTOR_OID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
    static SPARSEVEC_OID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// OID of a type created by the `vector` extension, cached per backend and checked against the
/// type cache on each use: `DROP EXTENSION vector CASCADE` and a new `CREATE EXTENSION` give the
/// type a new OID, and the old one must not be used ("cache lookup failed for type").
fn cached_pgvector_type_oid(cache: &'static std::thread::LocalKey<Cell<pg_sys::Oid>>, name: &str) -> pg_sys::Oid {
    let cached = cache.with(Cell::get);
    let exists = |oid: pg_sys::Oid| unsafe {
        let zero = pg_sys::Datum::from(0);
        pg_sys::SearchSysCacheExists(pg_sys::SysCacheIdentifier::TYPEOID as i32, pg_sys::Datum::from(oid), zero, zero, zero)
    };
    if cached != pg_sys::InvalidOid && exists(cached) {
        return cached;
    }
    // A member of the extension, not any type of that name in its schema: with a pgvector
    // before 0.7 (no sparsevec) in a schema others may write to, a role's own `sparsevec`
    // there would otherwise be taken for pgvector's.
    let oid = crate::spi::read_one::<pg_sys::Oid>(
        "SELECT t.oid FROM pg_catalog.pg_type t
           JOIN pg_catalog.pg_extension e ON t.typnamespace OPERATOR(pg_catalog.=) e.extnamespace
           JOIN pg_catalog.pg_depend d ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
                                      AND d.objid OPERATOR(pg_catalog.=) t.oid AND d.objsubid OPERATOR(pg_catalog.=) 0
                                      AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                      AND d.refobjid OPERATOR(pg_catalog.=) e.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
          WHERE e.extname OPERATOR(pg_catalog.=) 'vector' AND t.typname OPERATOR(pg_catalog.=) $1",
        &[name.into()],
    );
    match oid {
        Ok(Some(oid)) => {
            cache.with(|c| c.set(oid));
            oid
        }
        _ => raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("lightretriever: pgvector's type \"{name}\" was not found"),
            Some("CREATE EXTENSION vector (pgvector >= 0.7) in this database."),
        ),
    }
}

/// OID of pgvector's type `name` (`vector` or `sparsevec`).
pub fn pgvector_type_oid(name: &str) -> pg_sys::Oid {
    match name {
        "vector" => cached_pgvector_type_oid(&VECTOR_OID, "vector"),
        "sparsevec" => cached_pgvector_type_oid(&SPARSEVEC_OID, "sparsevec"),
        _ => raise(Code::ERRCODE_INTERNAL_ERROR, format!("lightretriever: {name} is not a pgvector type used here"), None),
    }
}

/// Loads pgvector's library into this backend, as its first vector operation would: its settings
/// (`hnsw.ef_search`, …) exist only from then on. Looking up the `vector` type's input function
/// loads the library that holds it; nothing is called.
pub fn load_library() {
    let (mut input, mut io_param) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
    unsafe {
        pg_sys::getTypeInputInfo(Vector::type_oid(), &mut input, &mut io_param);
        let mut function = std::mem::zeroed::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info(input, &mut function);
    }
}

/// Allocates a 4-byte-header varlena in the current memory context and fills its payload.
unsafe fn palloc_varlena(payload_len: usize, fill: impl FnOnce(&mut [u8])) -> pg_sys::Datum {
    let total = pg_sys::VARHDRSZ + payload_len;
    let ptr = unsafe { pg_sys::palloc0(total) } as *mut pg_sys::varlena;
    unsafe { pgrx::set_varsize_4b(ptr, total as i32) };
    let payload = unsafe {
        std::slice::from_raw_parts_mut((ptr as *mut u8).add(pg_sys::VARHDRSZ), payload_len)
    };
    fill(payload);
    pg_sys::Datum::from(ptr)
}

/// `read` of the payload of a (possibly toasted or short-header) varlena datum, detoasted; a
/// detoasted copy is freed afterwards. Left to its memory context, every row's copy would stay
/// until that context ends: a fit reading a corpus of stored vectors kept them all.
unsafe fn with_payload<T>(datum: pg_sys::Datum, read: impl FnOnce(&[u8]) -> T) -> T {
    let original = datum.cast_mut_ptr::<pg_sys::varlena>();
    let v = unsafe { pg_sys::pg_detoast_datum(original) };
    let out = read(unsafe { std::slice::from_raw_parts(pgrx::vardata_any(v) as *const u8, pgrx::varsize_any_exhdr(v)) });
    if v != original {
        unsafe { pg_sys::pfree(v.cast()) };
    }
    out
}

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        if let Err(e) = lr_vector::validate_vector(&self.0) {
            raise(Code::ERRCODE_DATA_EXCEPTION, format!("lightretriever: cannot make a vector: {e}"), None);
        }
        let len = lr_vector::vector_payload_len(self.0.len());
        Some(unsafe {
            palloc_varlena(len, |out| lr_vector::write_vector(&self.0, out).expect("validated above"))
        })
    }
    fn type_oid() -> pg_sys::Oid {
        pgvector_type_oid("vector")
    }
}

impl FromDatum for Vector {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        match unsafe { with_payload(datum, lr_vector::decode_vector) } {
            Ok(v) => Some(Vector(v)),
            Err(e) => raise(Code::ERRCODE_DATA_CORRUPTED, format!("lightretriever: malformed vector: {e}"), None),
        }
    }
}

// Safety: the datum is a (possibly toasted) pgvector varlena; it is copied out, so the value
// does not borrow from it (`As` carries no lifetime).
unsafe impl pgrx::datum::UnboxDatum for Vector {
    type As<'src> = Vector;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        unsafe { Vector::from_datum(datum.sans_lifetime(), false) }.expect("a non-null array element")
    }
}

impl IntoDatum for SparseVec {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        if let Err(e) = self.0.validate() {
            raise(Code::ERRCODE_DATA_EXCEPTION, format!("lightretriever: cannot make a sparsevec: {e}"), None);
        }
        Some(unsafe { palloc_varlena(self.0.payload_len(), |out| self.0.write(out).expect("validated above")) })
    }
    fn type_oid() -> pg_sys::Oid {
        pgvector_type_oid("sparsevec")
    }
}

impl FromDatum for SparseVec {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        match unsafe { with_payload(datum, SparseVector::decode) } {
            Ok(v) => Some(SparseVec(v)),
            Err(e) => raise(Code::ERRCODE_DATA_CORRUPTED, format!("lightretriever: malformed sparsevec: {e}"), None),
        }
    }
}

macro_rules! pass_by_varlena {
    ($t:ty) => {
        unsafe impl pgrx::callconv::BoxRet for $t {
            unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
                match self.into_datum() {
                    Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
                    None => fcinfo.return_null(),
                }
            }
        }
        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $t {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }
        }
    };
}
pass_by_varlena!(Vector);
pass_by_varlena!(SparseVec);

/// Round-trip helpers for the `#[pg_test]`s: they read pgvector's bytes (validating them) and
/// write them back. Only `pg_test` builds have them; see `removed_in_0_2_0` for the others.
#[cfg(feature = "pg_test")]
#[pg_extern(immutable, parallel_safe, strict)]
fn lr_vector_roundtrip(v: Vector) -> Vector {
    v
}

#[cfg(feature = "pg_test")]
#[pg_extern(immutable, parallel_safe, strict)]
fn lr_sparsevec_roundtrip(v: SparseVec) -> SparseVec {
    v
}

/// 0.1.0's install script created the round-trip helpers (0.2.0's upgrade drops them), and
/// PostgreSQL looks a C function's symbols up when it creates it: the shipped library keeps
/// the two symbols, so that 0.1.0 can still be installed and then updated. Called, they are
/// an error; they are in no SQL of this version.
#[cfg(not(feature = "pg_test"))]
mod removed_in_0_2_0 {
    use pgrx::pg_sys;

    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };

    fn removed(name: &str) -> ! {
        crate::error::raise(
            crate::error::Code::ERRCODE_UNDEFINED_FUNCTION,
            format!("lightretriever: {name} was removed in 0.2.0"),
            Some("Update the extension: ALTER EXTENSION lightretriever UPDATE."),
        )
    }

    #[no_mangle]
    pub extern "C" fn pg_finfo_lr_vector_roundtrip_wrapper() -> &'static pg_sys::Pg_finfo_record {
        &V1_API
    }

    #[no_mangle]
    pub extern "C" fn pg_finfo_lr_sparsevec_roundtrip_wrapper() -> &'static pg_sys::Pg_finfo_record {
        &V1_API
    }

    #[no_mangle]
    #[pgrx::pg_guard]
    pub unsafe extern "C-unwind" fn lr_vector_roundtrip_wrapper(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
        removed("lr_vector_roundtrip")
    }

    #[no_mangle]
    #[pgrx::pg_guard]
    pub unsafe extern "C-unwind" fn lr_sparsevec_roundtrip_wrapper(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
        removed("lr_sparsevec_roundtrip")
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    /// What `DROP EXTENSION vector CASCADE` and a new `CREATE EXTENSION` leave behind in a
    /// backend: a cached OID that names no type any more. It is looked up again, not used.
    #[pg_test]
    fn a_cached_type_oid_that_names_no_type_is_looked_up_again() {
        let (vector, sparsevec) = (Vector::type_oid(), SparseVec::type_oid());
        let gone = pg_sys::Oid::from(4_000_000_000u32);
        assert_eq!(Spi::get_one_with_args::<bool>("SELECT NOT EXISTS (SELECT FROM pg_type WHERE oid = $1)", &[gone.into()]), Ok(Some(true)));
        VECTOR_OID.with(|c| c.set(gone));
        SPARSEVEC_OID.with(|c| c.set(gone));
        assert_eq!((Vector::type_oid(), SparseVec::type_oid()), (vector, sparsevec));
        let v = Vector(vec![1.0, 2.0]);
        assert_eq!(Spi::get_one_with_args::<f64>("SELECT ($1 <#> '[1,1]'::vector)::float8", &[v.into()]), Ok(Some(-3.0)));
    }

    /// pgvector's types are the vector extension's members, not any type of that name in its
    /// schema: with a pgvector before 0.7 (no `sparsevec`) in a schema others may create in, a
    /// role's own `sparsevec` there must not be taken for pgvector's. Made here by taking the
    /// type out of the extension.
    #[pg_test]
    fn only_the_vector_extensions_own_types_are_pgvectors() {
        let vector = Vector::type_oid();
        Spi::run("ALTER EXTENSION vector DROP TYPE sparsevec").unwrap();
        SPARSEVEC_OID.with(|c| c.set(pg_sys::InvalidOid));
        Spi::run("CREATE TEMP TABLE t (v vector(2), s sparsevec(4))").unwrap();
        let relid = Spi::get_one::<pg_sys::Oid>("SELECT 't'::regclass::oid").unwrap().unwrap();
        // The lookups read in the active snapshot, as in a statement after the ALTER.
        let in_a_later_statement = |f: &dyn Fn() -> String| {
            crate::spi::in_subtransaction(|| unsafe {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
                let out = f();
                pg_sys::PopActiveSnapshot();
                out
            })
        };
        let refused = in_a_later_statement(&|| SparseVec::type_oid().to_u32().to_string()).unwrap_err();
        assert!(refused.contains("pgvector's type \"sparsevec\" was not found"), "{refused}");
        let refused = in_a_later_statement(&|| crate::columns::pgvector_columns(relid, "sparsevec", None, None).join(",")).unwrap_err();
        assert!(refused.contains("was not found"), "{refused}");
        let found = in_a_later_statement(&|| crate::columns::pgvector_columns(relid, "vector", None, None).join(","));
        assert_eq!(found.as_deref(), Ok("v"));
        Spi::run("ALTER EXTENSION vector ADD TYPE sparsevec").unwrap();
        assert_eq!(pgvector_type_oid("vector"), vector);
        assert_eq!(pgvector_type_oid("sparsevec"), Spi::get_one::<pg_sys::Oid>("SELECT 'sparsevec'::regtype::oid").unwrap().unwrap());
    }

    #[pg_test]
    fn vector_round_trips_through_pgvectors_operators() {
        // Built in Rust, compared by pgvector's own operators against pgvector's text input.
        let v = Vector(vec![1.0, -2.0, 0.5]);
        let q = |sql: &str| Spi::get_one_with_args::<f64>(sql, &[v.clone().into()]).unwrap().unwrap();
        assert_eq!(q("SELECT ($1 = '[1,-2,0.5]'::vector)::int::float8"), 1.0);
        assert_eq!(q("SELECT ($1 <#> '[1,1,1]'::vector)::float8"), 0.5);
        assert_eq!(q("SELECT ($1 <-> '[1,-2,1.5]'::vector)::float8"), 1.0);
        assert!(q("SELECT ($1 <=> '[2,-4,1]'::vector)::float8").abs() < 1e-6);
        let back = Spi::get_one::<Vector>("SELECT lightretriever.lr_vector_roundtrip('[3,4,-0.25]'::vector)").unwrap();
        assert_eq!(back, Some(Vector(vec![3.0, 4.0, -0.25])));
        let dims = Spi::get_one::<i32>("SELECT vector_dims(lightretriever.lr_vector_roundtrip('[1,2,3,4]'))").unwrap();
        assert_eq!(dims, Some(4));
    }

    #[pg_test]
    fn sparsevec_round_trips_through_pgvectors_operators() {
        let sv = SparseVec(SparseVector::from_pairs(6, vec![(4, 2.0), (0, 1.5)]).unwrap());
        let text = Spi::get_one_with_args::<String>("SELECT $1::text", &[sv.clone().into()]).unwrap();
        assert_eq!(text.as_deref(), Some("{1:1.5,5:2}/6"));
        let ip = Spi::get_one_with_args::<f64>(
            "SELECT ($1 <#> '{1:2,5:3,6:7}/6'::sparsevec)::float8",
            &[sv.into()],
        )
        .unwrap();
        assert_eq!(ip, Some(-(1.5 * 2.0 + 2.0 * 3.0)));
        let back = Spi::get_one::<SparseVec>("SELECT lightretriever.lr_sparsevec_roundtrip('{2:0.5,3:-1}/10')").unwrap();
        assert_eq!(back.unwrap().0, SparseVector::from_pairs(10, vec![(1, 0.5), (2, -1.0)]).unwrap());
        let l2 = Spi::get_one::<f64>(
            "SELECT (lightretriever.lr_sparsevec_roundtrip('{1:3}/4') <-> '{2:4}/4'::sparsevec)::float8",
        )
        .unwrap();
        assert_eq!(l2, Some(5.0));
    }
}

/// pgvector's type `name`, schema-qualified (the search_path here is pg_catalog only). A read
/// (pgrx's `Spi::get_one_with_args` would take a transaction id, which a hot standby refuses).
pub fn pgvector_type(name: &str) -> String {
    crate::spi::read_one::<String>(
        "SELECT pg_catalog.format('%I.%I', n.nspname, t.typname) FROM pg_catalog.pg_type t
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace
          WHERE t.oid OPERATOR(pg_catalog.=) $1",
        &[pgvector_type_oid(name).into()],
    )
    .unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, format!("lightretriever: {e}"), None))
    .unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_OBJECT, "lightretriever: pgvector is not installed", None))
}

/// A sparse vector over the model's vocabulary, or an error naming the cause (pgvector's
/// 16,000 non-zero limit included: never a silent cut).
pub fn to_sparsevec(dim: usize, pairs: Vec<(u32, f32)>) -> SparseVec {
    SparseVec(SparseVector::from_pairs(dim, pairs).or_raise(Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED))
}
