//! The query-table catalog (`lr_query_tables`): what keys a table (model, instruction) and the
//! hint of errors about its bytes (stored and cached: `table_store`).

use lr_model::ModelFamily;

use crate::error::{raise, Code};

/// The hint of every error about a table whose stored bytes are not what its catalog row says.
pub const REBUILD_HINT: &str = "Rebuild the table with lightretriever.lr_build_query_table.";

pub fn instruction_key(instruction: Option<&str>) -> &str {
    instruction.unwrap_or("")
}

/// Refuses an instruction for models that take none (BERT-family encoders).
pub fn check_instruction(name: &str, info: &lr_model::ModelInfo, instruction: Option<&str>, function: &str) {
    if instruction.is_some() && info.family == ModelFamily::Bert {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("lightretriever: model \"{name}\" is a BERT-family encoder, which takes no instruction"),
            Some(&format!("Call {function} with instruction => NULL; instruction tables need a decoder LLM.")),
        );
    }
}
