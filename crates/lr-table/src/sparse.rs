//! The sparse query encoder: LightRetriever's sparse query side, with no model. A query is the
//! counts of its token ids (no special tokens, the first [`MAX_QUERY_TOKENS`]), each count times
//! its id's fitted weight when the model has weights (idf, `lr_fit_sparse_query_weights`).
//! Ids past the weights (a vocabulary larger than the fit's) keep their raw count.

use lr_tokenizer::QueryTokenizer;

use crate::lookup::{LookupError, MAX_QUERY_TOKENS};

pub struct SparseQueryEncoder {
    tokenizer: QueryTokenizer,
}

impl SparseQueryEncoder {
    /// `tokenizer` must be loaded without truncation (queries are cut here): a `Tokenizer`, or
    /// a `QueryTokenizer::from_file` (which holds less memory).
    pub fn new(tokenizer: impl Into<QueryTokenizer>) -> Self {
        SparseQueryEncoder { tokenizer: tokenizer.into() }
    }

    pub fn query_tokenizer(&self) -> &QueryTokenizer {
        &self.tokenizer
    }

    /// (id, weight) pairs, ascending by id, one per distinct id: its count in the query's first
    /// `MAX_QUERY_TOKENS` ids (a long query is cut before tokenizing; the cut never changes
    /// those ids), times `weights[id]` when `weights` gives weights. `weights` is asked only once
    /// the query has tokens (a query without tokens is that error, whatever the weights).
    pub fn encode<W: AsRef<[f32]>>(&self, query: &str, weights: impl FnOnce() -> Option<W>) -> Result<Vec<(u32, f32)>, LookupError> {
        let ids = self.tokenizer.first_ids(query, MAX_QUERY_TOKENS).map_err(LookupError::Tokenizer)?;
        if ids.is_empty() {
            return Err(LookupError::NoTokens);
        }
        let mut pairs = lr_tokenizer::counts_of(&ids);
        if let Some(w) = weights() {
            let w = w.as_ref();
            pairs.iter_mut().for_each(|(id, c)| *c *= w.get(*id as usize).copied().unwrap_or(1.0));
        }
        Ok(pairs)
    }
}
