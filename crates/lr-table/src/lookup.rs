//! The lookup query encoder: tokenize, average table rows (weighted when the table stores
//! per-row weights), L2-normalise. No model, no inference. Tokenizing goes through
//! [`QueryTokenizer`] (the exact ids of `lr_tokenizer::plain_ids`, without the Hugging Face
//! pipeline's overhead on ASCII queries to BERT WordPiece tokenizers).

use lr_tokenizer::{QueryTokenizer, Tokenizer};

use crate::format::{QueryTable, TableError};

/// LightRetriever truncates queries at 512 tokens.
pub const MAX_QUERY_TOKENS: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub enum LookupError {
    /// The query produced no tokens (empty or only whitespace/control characters).
    NoTokens,
    Tokenizer(String),
    /// A token id has no row: the table was built for a smaller vocabulary.
    IdOutOfRange { id: u32, rows: usize },
    /// The mean of the rows is the zero vector; it has no direction to normalise.
    ZeroVector,
    /// A read of the table's mapping faulted during the lookup (the file was truncated or
    /// failed while mapped): the rows read may be zeros, so no vector is returned. The table
    /// must be re-opened. The message is the [`TableError::Changed`] text.
    TableChanged(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NoTokens => write!(f, "the query has no tokens to look up"),
            LookupError::Tokenizer(m) => write!(f, "{m}"),
            LookupError::IdOutOfRange { id, rows } => {
                write!(f, "token id {id} is outside the query table's {rows} rows")
            }
            LookupError::ZeroVector => write!(f, "the query's token rows sum to the zero vector"),
            LookupError::TableChanged(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for LookupError {}

pub struct LookupEncoder {
    table: QueryTable,
    tokenizer: QueryTokenizer,
}

impl LookupEncoder {
    /// `tokenizer` must be loaded without truncation (queries are cut at 512 tokens here): a
    /// `Tokenizer`, or a `QueryTokenizer::from_file` (which holds less memory).
    pub fn new(table: QueryTable, tokenizer: impl Into<QueryTokenizer>) -> Self {
        LookupEncoder { table, tokenizer: tokenizer.into() }
    }

    /// The Hugging Face tokenizer the encoder was built with.
    pub fn tokenizer(&self) -> Result<&Tokenizer, String> {
        self.tokenizer.tokenizer()
    }

    /// The query tokenizer `token_ids` and `encode` use.
    pub fn query_tokenizer(&self) -> &QueryTokenizer {
        &self.tokenizer
    }

    pub fn table(&self) -> &QueryTable {
        &self.table
    }

    pub fn dims(&self) -> usize {
        self.table.dims()
    }

    /// [`QueryTable::check_unchanged`] of the table: once per statement, before encoding
    /// (`encode` itself makes no system call; it only notices read faults).
    pub fn check_unchanged(&self) -> Result<(), TableError> {
        self.table.check_unchanged()
    }

    /// The query's first `MAX_QUERY_TOKENS` ids; a long query is cut before tokenizing (the
    /// cut never changes those ids), so its cost is bounded by what the model reads.
    pub fn token_ids(&self, query: &str) -> Result<Vec<u32>, LookupError> {
        self.tokenizer.first_ids(query, MAX_QUERY_TOKENS).map_err(LookupError::Tokenizer)
    }

    pub fn encode(&self, query: &str) -> Result<Vec<f32>, LookupError> {
        let ids = self.token_ids(query)?;
        self.encode_ids(&ids)
    }

    /// Weighted mean of the rows of `ids` (repeats count), L2-normalised: Σ w_t·row_t with the
    /// table's per-row weights, or the plain mean when the table has none. The mean's scale
    /// disappears in the normalisation, so the sum is normalised directly.
    ///
    /// If a read of the table faulted meanwhile (file truncated while mapped), the rows read
    /// may be zeros: the result is [`LookupError::TableChanged`], never that vector.
    pub fn encode_ids(&self, ids: &[u32]) -> Result<Vec<f32>, LookupError> {
        if ids.is_empty() {
            return Err(LookupError::NoTokens);
        }
        let rows = self.table.rows();
        let mut acc = vec![0.0f32; self.table.dims()];
        for &id in ids {
            if id as usize >= rows {
                return Err(LookupError::IdOutOfRange { id, rows });
            }
            let w = self.table.weight(id as usize);
            if w != 0.0 {
                self.table.add_row_to(id as usize, w, &mut acc);
            }
        }
        // One atomic load after the reads; no system call on this path.
        if self.table.is_damaged() {
            return Err(LookupError::TableChanged(
                TableError::Changed {
                    path: self.table.path().to_path_buf(),
                    reason: "read fault: a page of the mapping could not be read".into(),
                }
                .to_string(),
            ));
        }
        let norm = acc.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
        if !(norm > 0.0) || !norm.is_finite() {
            return Err(LookupError::ZeroVector);
        }
        let inv = (1.0 / norm) as f32;
        acc.iter_mut().for_each(|v| *v *= inv);
        Ok(acc)
    }
}
