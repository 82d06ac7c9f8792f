//! Document encoding by the full model, run by the encoder worker (`inference.rs`):
//! `lr_encode_document(s)` (dense) and `lr_encode_document_sparse` (masked-LM head).

mod dense;
mod sparse;
