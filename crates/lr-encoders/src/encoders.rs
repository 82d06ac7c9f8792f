//! A registered model's full encoders, whatever its family: what the extension and the fitting
//! code call, so that neither branches on BERT versus decoder LLM. One dispatch for both kinds.

use crate::bert::BertEncoder;
use lr_model::error::{ModelError, Result};
use crate::llm::LlmEncoder;
use lr_model::model_dir::ModelInfo;
use crate::sparse::SparseEncoder;
use candle_core::Device;
use lr_model::Kernels;
use std::sync::Arc;

/// A registered model's encoder of one kind, whatever its family: a BERT-family encoder `B`
/// (dense: [`BertEncoder`], sparse: [`SparseEncoder`]), or a decoder LLM, shared (`Arc`) so that
/// the same weights serve its dense and its LM-head sparse encoder.
pub enum FamilyEncoder<B> {
    Bert(B),
    Llm(Arc<LlmEncoder>),
}

/// Dense document vectors and query-table rows.
pub type DocumentEncoder = FamilyEncoder<BertEncoder>;

/// Sparse document vectors: a BERT masked-LM head (SPLADE) or a decoder's LM head.
pub type SparseDocumentEncoder = FamilyEncoder<SparseEncoder>;

/// What a BERT-family encoder of either kind offers the dispatch.
pub trait BertFamily: Sized {
    fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self>;
    fn info(&self) -> &ModelInfo;
}

impl BertFamily for BertEncoder {
    fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self> {
        BertEncoder::load_with(info, device, kernels)
    }
    fn info(&self) -> &ModelInfo {
        BertEncoder::info(self)
    }
}

impl BertFamily for SparseEncoder {
    fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self> {
        SparseEncoder::load_with(info, device, kernels)
    }
    fn info(&self) -> &ModelInfo {
        SparseEncoder::info(self)
    }
}

impl<B: BertFamily> FamilyEncoder<B> {
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        Self::load_with(info, device, Kernels::Native)
    }

    /// [`FamilyEncoder::load`] with a choice of CPU kernels (`Kernels::Candle`: candle's ops, as
    /// on CUDA).
    pub fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self> {
        if info.family == lr_model::ModelFamily::Reranker {
            return Err(ModelError::InvalidModel(format!(
                "{} is a PE-Rank reranker: it ranks passages (lr_rerank) and encodes nothing",
                info.path.display()
            )));
        }
        if info.family.is_decoder() {
            Ok(FamilyEncoder::Llm(Arc::new(LlmEncoder::load_with(info, device, kernels)?)))
        } else {
            Ok(FamilyEncoder::Bert(B::load_with(info, device, kernels)?))
        }
    }

    /// The decoder behind this encoder, when it is one (to build the other kind without a
    /// second load: `SparseDocumentEncoder::Llm(decoder)` from a dense one, and back).
    pub fn decoder_llm(&self) -> Option<&Arc<LlmEncoder>> {
        match self {
            FamilyEncoder::Llm(e) => Some(e),
            FamilyEncoder::Bert(_) => None,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            FamilyEncoder::Bert(e) => e.info(),
            FamilyEncoder::Llm(e) => e.info(),
        }
    }
}

impl DocumentEncoder {
    pub fn dim(&self) -> usize {
        match self {
            FamilyEncoder::Bert(e) => e.dim(),
            FamilyEncoder::Llm(e) => e.dim(),
        }
    }

    /// L2-normalised document vectors, in input order.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        match self {
            FamilyEncoder::Bert(e) => e.encode(texts),
            FamilyEncoder::Llm(e) => e.encode(texts),
        }
    }

    /// Documents already tokenised as the model wraps them, in `batch`-sized forward passes.
    pub fn encode_document_ids(&self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            FamilyEncoder::Bert(e) => {
                let ids = texts.iter().map(|t| e.document_ids(t)).collect::<Result<Vec<_>>>()?;
                e.encode_id_sequences(&ids, batch)
            }
            FamilyEncoder::Llm(e) => {
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
            (FamilyEncoder::Bert(e), None) => e.token_table_rows(ids),
            (FamilyEncoder::Bert(_), Some(_)) => {
                Err(ModelError::InvalidOption("BERT-family encoders take no instruction".into()))
            }
            (FamilyEncoder::Llm(e), Some(i)) => e.token_table_rows(&e.query_prompt_prefix(i)?, ids),
            (FamilyEncoder::Llm(e), None) => e.token_table_rows(&e.bos_prefix(), ids),
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

impl SparseDocumentEncoder {
    /// One (id, weight) list per text, sorted by id, pruned to the model's `sparse_top_k`.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<(u32, f32)>>> {
        let top_k = self.info().sparse_top_k;
        match self {
            FamilyEncoder::Bert(e) => {
                Ok(e.encode(texts)?.into_iter().map(|v| crate::llm::prune_to_top_k(v, top_k)).collect())
            }
            FamilyEncoder::Llm(e) => e.encode_sparse(texts, top_k),
        }
    }
}
