use std::fmt;

/// Every failure a model can report; the message names the cause and the file when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The model directory or one of its files is missing, unreadable or malformed.
    InvalidModel(String),
    /// The options given at registration are not understood.
    InvalidOption(String),
    /// The tokenizer failed on an input.
    Tokenizer(String),
    /// The inference engine failed.
    Inference(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::InvalidModel(m) => write!(f, "invalid model: {m}"),
            ModelError::InvalidOption(m) => write!(f, "invalid model option: {m}"),
            ModelError::Tokenizer(m) => write!(f, "tokenizer error: {m}"),
            ModelError::Inference(m) => write!(f, "inference error: {m}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError::Inference(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
