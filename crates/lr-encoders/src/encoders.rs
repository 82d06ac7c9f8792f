//! A registered model's full encoders, whatever its family: what the extension and the fitting
//! code call, so that neither branches on BERT versus decoder LLM.

use crate::bert::BertEncoder;
use lr_model::error::{ModelError, Result};
use crate::llm::LlmEncoder;
use lr_model::model_dir::ModelInfo;
use crate::sparse::SparseEncoder;
use candle_core::Device;
use std::sync::Arc;

/// Dense document vectors and query-table rows. A decoder LLM is shared (`Arc`): the same
/// weights serve its dense and its LM-head sparse encoder.
pub enum DocumentEncoder {
    Bert(BertEncoder),
    Llm(Arc<LlmEncoder>),
}

impl DocumentEncoder {
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        if info.family.is_decoder() {
            Ok(DocumentEncoder::Llm(Arc::new(LlmEncoder::load(info, device)?)))
        } else {
            Ok(DocumentEncoder::Bert(BertEncoder::load(info, device)?))
        }
    }

    /// The decoder behind this encoder, when it is one (to build its sparse encoder without a
    /// second load: `SparseDocumentEncoder::Llm(decoder)`).
    pub fn decoder_llm(&self) -> Option<&Arc<LlmEncoder>> {
        match self {
            DocumentEncoder::Llm(e) => Some(e),
            DocumentEncoder::Bert(_) => None,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            DocumentEncoder::Bert(e) => e.info(),
            DocumentEncoder::Llm(e) => e.info(),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            DocumentEncoder::Bert(e) => e.dim(),
            DocumentEncoder::Llm(e) => e.dim(),
        }
    }

    /// L2-normalised document vectors, in input order.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        match self {
            DocumentEncoder::Bert(e) => e.encode(texts),
            DocumentEncoder::Llm(e) => e.encode(texts),
        }
    }

    /// Documents already tokenised as the model wraps them, in `batch`-sized forward passes.
    pub fn encode_document_ids(&self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            DocumentEncoder::Bert(e) => {
                let ids = texts.iter().map(|t| e.document_ids(t)).collect::<Result<Vec<_>>>()?;
                e.encode_id_sequences(&ids, batch)
            }
            DocumentEncoder::Llm(e) => {
                let ids = texts.iter().map(|t| e.document_ids(t)).collect::<Result<Vec<_>>>()?;
                e.encode_id_sequences(&ids, batch)
            }
        }
    }

    /// How one table row is made, for the table's build record.
    pub fn table_input(&self, instruction: Option<&str>) -> String {
        table_input(self.info(), instruction)
    }

    /// The untrained query-table rows of `ids`: each id encoded alone, behind the instruction
    /// prompt for decoder LLMs (`[bos] Instruct: {instruction}\nQuery: {id}[eos]`, eos state)
    /// or as `[CLS] id [SEP]` for BERT-family encoders (which take no instruction).
    pub fn table_rows(&self, instruction: Option<&str>, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        match (self, instruction) {
            (DocumentEncoder::Bert(e), None) => e.token_table_rows(ids),
            (DocumentEncoder::Bert(_), Some(_)) => {
                Err(ModelError::InvalidOption("BERT-family encoders take no instruction".into()))
            }
            (DocumentEncoder::Llm(e), Some(i)) => e.token_table_rows(&e.query_prompt_prefix(i)?, ids),
            (DocumentEncoder::Llm(e), None) => e.token_table_rows(&e.bos_prefix(), ids),
        }
    }
}

/// How one query-table row of a model of `info`'s family is made, for the table's build record.
pub fn table_input(info: &ModelInfo, instruction: Option<&str>) -> String {
    if !info.family.is_decoder() {
        return "[CLS] id [SEP]".into();
    }
    match instruction {
        Some(i) => format!("[bos] Instruct: {i}\\nQuery: id [eos]"),
        None => "[bos] id [eos]".into(),
    }
}

/// Sparse document vectors: a BERT masked-LM head (SPLADE) or a decoder's LM head.
pub enum SparseDocumentEncoder {
    Bert(SparseEncoder),
    Llm(Arc<LlmEncoder>),
}

impl SparseDocumentEncoder {
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        if info.family.is_decoder() {
            Ok(SparseDocumentEncoder::Llm(Arc::new(LlmEncoder::load(info, device)?)))
        } else {
            Ok(SparseDocumentEncoder::Bert(SparseEncoder::load(info, device)?))
        }
    }

    /// The decoder behind this encoder, when it is one (see `DocumentEncoder::decoder_llm`).
    pub fn decoder_llm(&self) -> Option<&Arc<LlmEncoder>> {
        match self {
            SparseDocumentEncoder::Llm(e) => Some(e),
            SparseDocumentEncoder::Bert(_) => None,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            SparseDocumentEncoder::Bert(e) => e.info(),
            SparseDocumentEncoder::Llm(e) => e.info(),
        }
    }

    /// One (id, weight) list per text, sorted by id, pruned to the model's `sparse_top_k`.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<(u32, f32)>>> {
        let top_k = self.info().sparse_top_k;
        match self {
            SparseDocumentEncoder::Bert(e) => {
                Ok(e.encode(texts)?.into_iter().map(|v| crate::llm::prune_to_top_k(v, top_k)).collect())
            }
            SparseDocumentEncoder::Llm(e) => e.encode_sparse(texts, top_k),
        }
    }
}
