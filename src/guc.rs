//! Settings, all under the reserved `lightretriever.` prefix.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::error::{raise, Code};

pub static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DEFAULT_SPARSE_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DEVICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"cpu"));

pub fn register() {
    GucRegistry::define_string_guc(
        c"lightretriever.default_model",
        c"Registered model used when a function's model argument is NULL.",
        c"Name of a row in lightretriever.lr_models.",
        &DEFAULT_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"lightretriever.default_sparse_model",
        c"Registered masked-LM model used by the sparse functions when their model argument is NULL.",
        c"Name of a row in lightretriever.lr_models with has_lm_head.",
        &DEFAULT_SPARSE_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"lightretriever.device",
        c"Where full models run: cpu, cuda or cuda:N.",
        c"CUDA needs a build with the cargo feature cuda. Models already loaded keep their device until the setting changes.",
        &DEVICE,
        GucContext::Suset,
        GucFlags::default(),
    );
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"lightretriever".as_ptr()) };
}

/// `lightretriever.device` (`cpu` when unset).
pub fn device_spec() -> String {
    DEVICE.get().map(|d| d.to_string_lossy().into_owned()).filter(|d| !d.is_empty()).unwrap_or_else(|| "cpu".into())
}

/// The model a call should use: its argument, else `lightretriever.default_model`.
pub fn resolve_model(arg: Option<&str>) -> String {
    resolve(arg, &DEFAULT_MODEL, "lightretriever.default_model")
}

/// The sparse model a call should use: its argument, else `lightretriever.default_sparse_model`.
pub fn resolve_sparse_model(arg: Option<&str>) -> String {
    resolve(arg, &DEFAULT_SPARSE_MODEL, "lightretriever.default_sparse_model")
}

fn resolve(arg: Option<&str>, setting: &GucSetting<Option<CString>>, guc: &str) -> String {
    if let Some(m) = arg {
        return m.to_owned();
    }
    match setting.get() {
        Some(m) if !m.as_bytes().is_empty() => m.to_string_lossy().into_owned(),
        _ => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: no model given and {guc} is not set"),
            Some(&format!("Pass the model name, or SET {guc} = '<name>' (see lightretriever.lr_models).")),
        ),
    }
}
