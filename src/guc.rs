//! Settings, all under the reserved `lightretriever.` prefix.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::error::{raise, Code};

pub static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register() {
    GucRegistry::define_string_guc(
        c"lightretriever.default_model",
        c"Registered model used when a function's model argument is NULL.",
        c"Name of a row in lightretriever.lr_models.",
        &DEFAULT_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"lightretriever".as_ptr()) };
}

/// The model a call should use: its argument, else `lightretriever.default_model`.
pub fn resolve_model(arg: Option<&str>) -> String {
    if let Some(m) = arg {
        return m.to_owned();
    }
    match DEFAULT_MODEL.get() {
        Some(m) if !m.as_bytes().is_empty() => m.to_string_lossy().into_owned(),
        _ => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: no model given and lightretriever.default_model is not set",
            Some("Pass the model name, or SET lightretriever.default_model = '<name>' (see lightretriever.lr_models)."),
        ),
    }
}
