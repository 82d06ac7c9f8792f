//! Tokenizer loading with the model's real limits (shipped padding and truncation are replaced).
//! Shared by the full encoders (`lr-model`) and the model-free lookup encoder (`lr-table`).

use std::path::Path;

mod prefix;
mod query;
pub use prefix::{prefix_for_tokens, PrefixCutter, BUDGET_BYTES_PER_TOKEN, MAX_TOKENIZED_BYTES, MIN_BUDGET_BYTES, TOKEN_MARGIN};
pub use query::QueryTokenizer;

pub use tokenizers::{Encoding, Tokenizer};
use tokenizers::TruncationParams;

/// Loads `tokenizer.json` with padding disabled and truncation at `max_length` tokens (special
/// tokens included; `None` = no truncation). all-MiniLM-L6-v2 ships `padding: Fixed(128)`: pooling
/// over those pads silently ruins every vector, so padding is always the caller's decision.
pub fn load_tokenizer(path: &Path, max_length: Option<usize>) -> Result<Tokenizer, String> {
    let mut tok = Tokenizer::from_file(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    set_limits(&mut tok, max_length).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(tok)
}

/// No padding, truncation at `max_length` tokens: what [`load_tokenizer`] does to every
/// tokenizer it parses.
fn set_limits(tok: &mut Tokenizer, max_length: Option<usize>) -> Result<(), String> {
    tok.with_padding(None);
    let truncation = max_length.map(|max_length| TruncationParams { max_length, ..Default::default() });
    tok.with_truncation(truncation).map(|_| ()).map_err(|e| e.to_string())
}

/// Token ids of `text` without special tokens, as the lookup query encoder sees them. A text
/// over [`MAX_TOKENIZED_BYTES`] is refused (cut it first: [`PrefixCutter`]).
pub fn plain_ids(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, String> {
    if text.len() > MAX_TOKENIZED_BYTES {
        return Err(format!("a text of {} bytes is too long to tokenize whole (at most {MAX_TOKENIZED_BYTES})", text.len()));
    }
    let enc = tok.encode(text, false).map_err(|e| format!("cannot tokenize: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

/// LightRetriever's sparse query: raw counts of the token ids of `text` tokenized without special
/// tokens (no model, no weighting), sorted by id. Truncation is the tokenizer's own (see
/// `load_tokenizer`); an empty or all-whitespace text gives an empty vector.
pub fn count_ids(tok: &Tokenizer, text: &str) -> Result<Vec<(u32, f32)>, String> {
    Ok(counts_of(&plain_ids(tok, text)?))
}

/// Counts of each id in `ids`, sorted by id: for callers that truncate the ids themselves.
pub fn counts_of(ids: &[u32]) -> Vec<(u32, f32)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut counts: Vec<(u32, f32)> = Vec::new();
    for id in sorted {
        match counts.last_mut() {
            Some((last, n)) if *last == id => *n += 1.0,
            _ => counts.push((id, 1.0)),
        }
    }
    counts
}

/// Ids of the special tokens a BERT-style template puts around a single sequence
/// (`[CLS]` before, `[SEP]` after), read from the tokenizer's own post-processor.
pub fn special_wrapping(tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>), String> {
    let enc = tok.encode("", true).map_err(|e| format!("cannot tokenize: {e}"))?;
    let ids = enc.get_ids();
    match ids.len() {
        0 => Ok((vec![], vec![])),
        1 => Ok((ids.to_vec(), vec![])),
        _ => Ok((ids[..1].to_vec(), ids[1..].to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_sorted_and_summed() {
        assert_eq!(counts_of(&[7, 3, 7, 1, 7]), vec![(1, 1.0), (3, 1.0), (7, 3.0)]);
        assert!(counts_of(&[]).is_empty());
    }
}
