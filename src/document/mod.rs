//! Document encoding by the full model, run by the encoder worker (`inference.rs`):
//! `lr_encode_document(s)` (dense) and `lr_encode_document(s)_sparse` (masked-LM head).

use pgrx::datum::Array;

mod dense;
mod sparse;

/// One output per element of `docs`, in order, None for a NULL element: the non-NULL texts are
/// encoded in one call (one worker request, batched there).
fn per_element<'a, T>(docs: Array<'a, &'a str>, encode: impl FnOnce(&[&str]) -> Vec<T>) -> Vec<Option<T>> {
    let items: Vec<Option<&str>> = docs.iter().collect();
    let present: Vec<&str> = items.iter().flatten().copied().collect();
    let mut encoded = if present.is_empty() { Vec::new() } else { encode(&present) }.into_iter();
    items.iter().map(|d| d.and_then(|_| encoded.next())).collect()
}
