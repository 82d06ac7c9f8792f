//! A fast query tokenizer for BERT-style WordPiece tokenizers.
//!
//! `tokenizers::Tokenizer::encode` costs ≈40 µs for a 10-token query (offsets, alignments,
//! added-token tries, normalisation bookkeeping), 30× the lookup table mean it feeds.
//! [`QueryTokenizer`] reproduces exactly what [`crate::plain_ids`] returns for the common case —
//! the BERT pipeline (`BertNormalizer` → `BertPreTokenizer` → `WordPiece`) on pure-ASCII text that
//! contains none of the tokenizer's added tokens — and hands everything else to the Hugging Face
//! tokenizer it wraps, so its answer never differs from `plain_ids`.
//!
//! What the fast path reproduces, for ASCII input (see tokenizers 0.23 `normalizers/bert.rs`,
//! `pre_tokenizers/bert.rs`, `models/wordpiece/mod.rs`):
//! - `clean_text`: drop `\0` and control characters (Cc) other than `\t \n \r`; map whitespace
//!   (`\t \n \r` and `char::is_whitespace`) to a space. `handle_chinese_chars` and
//!   `strip_accents` do nothing to ASCII. `lowercase`: ASCII lowercase.
//! - split on `char::is_whitespace` (removed), then on ASCII punctuation (each one its own word;
//!   for ASCII, BERT's `is_ascii_punctuation || is_punctuation` is `is_ascii_punctuation`).
//! - WordPiece: a word longer than `max_input_chars_per_word` is the unknown token; otherwise
//!   greedy longest match from the left, later pieces with `continuing_subword_prefix`; a word
//!   with any unmatched position is a single unknown token.
//! - truncation (when the tokenizer has one) as `encode(_, false)` applies it to one sequence.
//!
//! Anything the fast path cannot vouch for goes to Hugging Face: non-ASCII text, text containing
//! an added token's content (raw, or normalised for `normalized` added tokens: HF splits those out
//! even with `add_special_tokens = false`, e.g. a literal `[MASK]`), and any tokenizer that is not
//! exactly this pipeline (other normaliser / pre-tokenizer / model, padding, a post-processor that
//! could change the ids). At construction the fast path is also checked against HF on a few probe
//! strings and switched off if any differs.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use once_cell::sync::OnceCell;

use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{Model, NormalizedString, Normalizer, Tokenizer, TruncationDirection, TruncationStrategy};

use crate::PrefixCutter;

/// FxHash-style hasher for the vocabulary lookups (short keys, fixed vocabulary); std's SipHash
/// would be a large share of the fast path.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A read-only string → id map in flat arrays: about half the memory of a
/// `HashMap<Box<str>, u32>` (no allocation per key), which every backend holds once per model.
#[derive(Debug, Clone, Default)]
struct Vocab {
    /// The keys, back to back; key `i` ends at `ends[i]`.
    bytes: Vec<u8>,
    ends: Vec<u32>,
    ids: Vec<u32>,
    /// Open addressing, linear probing: entry index + 1, 0 = empty; a power of two long.
    slots: Vec<u32>,
    /// 64 - log2(slots.len()).
    shift: u32,
}

/// The slot of `key` in a table of `2^(64 - shift)` slots: the hash's high bits (a multiplicative
/// hash's low bits depend only on the key's first bytes).
fn key_slot(key: &[u8], shift: u32) -> usize {
    let mut h = FxHasher::default();
    h.write(key);
    (h.finish() >> shift) as usize
}

impl Vocab {
    fn from_pairs(pairs: &[(&str, u32)]) -> Vocab {
        let len = (pairs.len() * 3 / 2 + 2).next_power_of_two();
        let mut v = Vocab { slots: vec![0; len], shift: 64 - len.trailing_zeros(), ..Vocab::default() };
        let mask = len - 1;
        for (i, (key, id)) in pairs.iter().enumerate() {
            v.bytes.extend_from_slice(key.as_bytes());
            v.ends.push(v.bytes.len() as u32);
            v.ids.push(*id);
            let mut slot = key_slot(key.as_bytes(), v.shift);
            while v.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            v.slots[slot] = i as u32 + 1;
        }
        v
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    #[inline]
    fn get(&self, key: &str) -> Option<u32> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut slot = key_slot(key.as_bytes(), self.shift);
        loop {
            let entry = self.slots[slot] as usize;
            if entry == 0 {
                return None;
            }
            if self.key(entry - 1) == key.as_bytes() {
                return Some(self.ids[entry - 1]);
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// Truncation of a single sequence encoded without special tokens.
#[derive(Debug, Clone, Copy)]
enum Truncate {
    /// Keep the first `n` ids.
    Right(usize),
    /// Keep the last `n` ids.
    Left(usize),
}

/// The BERT WordPiece pipeline, restricted to ASCII text.
#[derive(Debug, Clone)]
struct FastBert {
    clean_text: bool,
    lowercase: bool,
    /// Word-initial pieces (ASCII keys only: the fast path only ever looks up ASCII).
    first: Vocab,
    /// Continuation pieces, keyed without `continuing_subword_prefix`.
    cont: Vocab,
    /// Longest key in `first` / `cont`, in bytes: longer substrings cannot match.
    max_first: usize,
    max_cont: usize,
    unk: u32,
    max_input_chars_per_word: usize,
    /// Added tokens HF matches in the raw text (`normalized: false`).
    raw_patterns: Vec<String>,
    /// Added tokens HF matches in the normalised text (`normalized: true`): content and its
    /// normalised form.
    normalized_patterns: Vec<String>,
    truncate: Option<Truncate>,
}

/// Query tokenizer: the exact ids of [`crate::plain_ids`], fast for ASCII text on BERT WordPiece
/// tokenizers, otherwise the Hugging Face tokenizer's own.
#[derive(Clone)]
pub struct QueryTokenizer {
    /// The Hugging Face tokenizer; made from `source` when first needed if it was let go.
    hf: OnceCell<Tokenizer>,
    /// Where a let-go tokenizer comes back from ([`QueryTokenizer::from_file`]).
    source: Option<Source>,
    /// Cuts long queries before tokenizing them (see [`QueryTokenizer::first_ids`]).
    cutter: PrefixCutter,
    fast: Option<FastBert>,
    /// Why the fast path is off (`None` when it is on).
    why_not: Option<String>,
}

impl std::fmt::Debug for QueryTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryTokenizer")
            .field("fast", &self.fast.is_some())
            .field("why_not", &self.why_not)
            .finish()
    }
}

/// Strings the fast path is checked on at construction (ASCII, no added tokens).
const PROBES: &[&str] = &[
    "how do scientists search for information in library catalogues",
    "Don't stop-believing: $100.00, C++ & a_b e-mail (x^2) `q` ~{|}",
    "\tTabs\nand\r\u{1}controls\u{7f}\u{b}\u{c} MiXeD CaSe 1234567890",
    "",
    "   ",
    "zzzzqqqxxxjjjj xylophonists antidisestablishmentarianism",
];

impl QueryTokenizer {
    /// Wraps `tok`, enabling the fast path when `tok` is a BERT WordPiece pipeline it reproduces.
    pub fn new(tok: Tokenizer) -> Self {
        let (fast, why_not) = match FastBert::detect(&tok) {
            Ok(fast) => match probe_mismatch(&tok, &fast) {
                None => (Some(fast), None),
                Some(why) => (None, Some(why)),
            },
            Err(why) => (None, Some(why)),
        };
        let cutter = PrefixCutter::new(&tok);
        QueryTokenizer { hf: OnceCell::with_value(tok), source: None, cutter, fast, why_not }
    }

    /// The query tokenizer of `tokenizer.json` at `path` (loaded as [`crate::load_tokenizer`]
    /// with no truncation). With a fast path, the Hugging Face tokenizer (≈8 MB for a BERT
    /// vocabulary, 5× the fast path's tables) is let go once the fast path is checked against it,
    /// and made again from the file only for text the fast path hands over (non-ASCII, added
    /// tokens); the file must then still be the same, byte for byte, or that call is an error.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let source = Source { path: path.to_owned(), digest: digest(&bytes) };
        let mut q = QueryTokenizer::new(source.parse(&bytes)?);
        if q.fast.is_some() {
            q.hf = OnceCell::new();
            q.source = Some(source);
        }
        Ok(q)
    }

    /// The Hugging Face tokenizer (made again from its file if it was let go).
    pub fn tokenizer(&self) -> Result<&Tokenizer, String> {
        self.hf.get_or_try_init(|| match &self.source {
            Some(source) => source.reload(),
            None => Err("the query tokenizer has no Hugging Face tokenizer".into()),
        })
    }

    /// The Hugging Face tokenizer, by value.
    pub fn into_inner(self) -> Result<Tokenizer, String> {
        self.tokenizer()?;
        Ok(self.hf.into_inner().expect("made just above"))
    }

    /// Whether the Hugging Face tokenizer is in memory now.
    pub fn holds_hugging_face(&self) -> bool {
        self.hf.get().is_some()
    }

    /// Whether the tokenizer was recognised as a BERT WordPiece pipeline (ASCII text not
    /// containing added tokens then takes the fast path).
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Why there is no fast path (`None` when there is one).
    pub fn why_no_fast_path(&self) -> Option<&str> {
        self.why_not.as_deref()
    }

    /// Token ids of `text` without special tokens: always equal to [`crate::plain_ids`].
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, String> {
        if let Some(ids) = self.fast_ids(text) {
            return Ok(ids);
        }
        crate::plain_ids(self.tokenizer()?, text)
    }

    /// The first `max_tokens` ids of [`QueryTokenizer::ids`], from a bounded prefix of `text`
    /// (see [`PrefixCutter`]): what a caller truncating the ids to `max_tokens` gets, without
    /// tokenizing all of a huge text.
    pub fn first_ids(&self, text: &str, max_tokens: usize) -> Result<Vec<u32>, String> {
        self.cutter.first_ids(text, max_tokens, |p| self.ids(p))
    }

    /// The cutter [`QueryTokenizer::first_ids`] uses.
    pub fn cutter(&self) -> &PrefixCutter {
        &self.cutter
    }

    /// The fast path's ids, or `None` when `text` (or the tokenizer) needs Hugging Face.
    pub fn fast_ids(&self, text: &str) -> Option<Vec<u32>> {
        let fast = self.fast.as_ref()?;
        let mut ids = Vec::with_capacity(text.len() / 4 + 4);
        fast.ids_into(text, &mut ids).then_some(ids)
    }

    /// Raw counts of the ids of `text`, sorted by id: [`crate::count_ids`] through this tokenizer.
    pub fn count_ids(&self, text: &str) -> Result<Vec<(u32, f32)>, String> {
        Ok(crate::counts_of(&self.ids(text)?))
    }
}

/// Where a let-go Hugging Face tokenizer comes back from: its file, and a digest of the bytes
/// the fast path was checked against.
#[derive(Clone, Debug)]
struct Source {
    path: PathBuf,
    digest: u64,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish() ^ (bytes.len() as u64).rotate_left(32)
}

impl Source {
    fn parse(&self, bytes: &[u8]) -> Result<Tokenizer, String> {
        let mut tok = Tokenizer::from_bytes(bytes).map_err(|e| format!("cannot load {}: {e}", self.path.display()))?;
        crate::set_limits(&mut tok, None).map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(tok)
    }

    fn reload(&self) -> Result<Tokenizer, String> {
        let bytes = std::fs::read(&self.path).map_err(|e| format!("cannot load {}: {e}", self.path.display()))?;
        if digest(&bytes) != self.digest {
            return Err(format!("{} has changed since this session's query tokenizer was made from it", self.path.display()));
        }
        self.parse(&bytes)
    }
}

impl From<Tokenizer> for QueryTokenizer {
    fn from(tok: Tokenizer) -> Self {
        QueryTokenizer::new(tok)
    }
}

/// `Some(description)` when the fast path disagrees with HF on a probe.
fn probe_mismatch(tok: &Tokenizer, fast: &FastBert) -> Option<String> {
    let long = "x".repeat(fast.max_input_chars_per_word.saturating_add(1).min(10_000));
    for text in PROBES.iter().copied().chain([long.as_str()]) {
        let mut got = Vec::new();
        if !fast.ids_into(text, &mut got) {
            continue; // contains an added token: HF's business anyway
        }
        match crate::plain_ids(tok, text) {
            Ok(want) if want == got => {}
            Ok(want) => return Some(format!("probe {text:?}: fast path {got:?}, tokenizers {want:?}")),
            Err(e) => return Some(format!("probe {text:?}: tokenizers fails ({e})")),
        }
    }
    None
}

#[inline]
fn is_ws(b: u8) -> bool {
    (b as char).is_whitespace()
}

impl FastBert {
    fn detect(tok: &Tokenizer) -> Result<FastBert, String> {
        let norm = match tok.get_normalizer() {
            Some(NormalizerWrapper::BertNormalizer(n)) => *n,
            other => return Err(format!("normalizer is not BertNormalizer: {other:?}")),
        };
        match tok.get_pre_tokenizer() {
            Some(PreTokenizerWrapper::BertPreTokenizer(_)) => {}
            other => return Err(format!("pre-tokenizer is not BertPreTokenizer: {other:?}")),
        }
        let wp = match tok.get_model() {
            ModelWrapper::WordPiece(wp) => wp,
            _ => return Err("model is not WordPiece".into()),
        };
        match tok.get_post_processor() {
            None | Some(PostProcessorWrapper::Bert(_)) | Some(PostProcessorWrapper::Roberta(_)) => {}
            Some(PostProcessorWrapper::Template(t)) => {
                // With add_special_tokens = false the template keeps only its sequence pieces.
                let single = format!("{:?}", t.single);
                if single.matches("Sequence { id: A").count() != 1 || single.contains("Sequence { id: B") {
                    return Err(format!("single-sequence template is not one $A: {single}"));
                }
            }
            Some(other) => return Err(format!("unsupported post-processor: {other:?}")),
        }
        if tok.get_padding().is_some() {
            return Err("padding is enabled".into());
        }
        let truncate = match tok.get_truncation() {
            None => None,
            Some(t) => match t.strategy {
                TruncationStrategy::LongestFirst | TruncationStrategy::OnlyFirst => {
                    if t.max_length > 0 && t.stride >= t.max_length {
                        return Err("truncation stride >= max_length".into());
                    }
                    Some(match t.direction {
                        TruncationDirection::Right => Truncate::Right(t.max_length),
                        TruncationDirection::Left => Truncate::Left(t.max_length),
                    })
                }
                TruncationStrategy::OnlySecond => return Err("truncation strategy OnlySecond".into()),
            },
        };

        let vocab = wp.get_vocab();
        let unk = *vocab
            .get(&wp.unk_token)
            .ok_or_else(|| format!("unknown token {:?} is not in the vocabulary", wp.unk_token))?;
        let prefix = wp.continuing_subword_prefix.as_str();
        let mut first: Vec<(&str, u32)> = Vec::new();
        let mut cont: Vec<(&str, u32)> = Vec::new();
        let (mut max_first, mut max_cont) = (0, 0);
        for (piece, &id) in &vocab {
            if !piece.is_ascii() {
                continue;
            }
            if let Some(rest) = piece.strip_prefix(prefix) {
                max_cont = max_cont.max(rest.len());
                cont.push((rest, id));
            }
            max_first = max_first.max(piece.len());
            first.push((piece, id));
        }
        let (first, cont) = (Vocab::from_pairs(&first), Vocab::from_pairs(&cont));

        let mut raw_patterns = Vec::new();
        let mut normalized_patterns = Vec::new();
        for (_, t) in tok.get_added_tokens_decoder() {
            if t.content.is_empty() {
                return Err("an added token is empty".into());
            }
            if t.normalized {
                let mut n = NormalizedString::from(t.content.as_str());
                norm.normalize(&mut n).map_err(|e| format!("cannot normalise {:?}: {e}", t.content))?;
                if n.get().is_empty() {
                    return Err(format!("added token {:?} normalises to nothing", t.content));
                }
                normalized_patterns.push(n.get().to_string());
                normalized_patterns.push(t.content);
            } else {
                raw_patterns.push(t.content);
            }
        }
        // Only ASCII text takes the fast path: non-ASCII patterns can never match it.
        raw_patterns.retain(|p| p.is_ascii());
        normalized_patterns.retain(|p| p.is_ascii());

        Ok(FastBert {
            clean_text: norm.clean_text,
            lowercase: norm.lowercase,
            first,
            cont,
            max_first,
            max_cont,
            unk,
            max_input_chars_per_word: wp.max_input_chars_per_word,
            raw_patterns,
            normalized_patterns,
            truncate,
        })
    }

    /// Appends the ids of `text` to `out`; `false` (with `out` unspecified) when `text` is not
    /// ASCII or contains an added token.
    fn ids_into(&self, text: &str, out: &mut Vec<u32>) -> bool {
        if !text.is_ascii() || self.raw_patterns.iter().any(|p| text.contains(p.as_str())) {
            return false;
        }
        // Normalise (byte for byte: every step is per character on ASCII).
        let mut norm: Vec<u8> = Vec::with_capacity(text.len());
        for &b in text.as_bytes() {
            let mut b = b;
            if self.clean_text {
                let keep_ws = matches!(b, b'\t' | b'\n' | b'\r');
                if b == 0 || ((b as char).is_control() && !keep_ws) {
                    continue;
                }
                if keep_ws || is_ws(b) {
                    b = b' ';
                }
            }
            if self.lowercase {
                b = b.to_ascii_lowercase();
            }
            norm.push(b);
        }
        if !self.normalized_patterns.is_empty() {
            // ASCII bytes in, ASCII bytes out.
            let s = std::str::from_utf8(&norm).expect("ASCII");
            if self.normalized_patterns.iter().any(|p| s.contains(p.as_str())) {
                return false;
            }
        }
        // Pre-tokenize: words end at whitespace (dropped) and punctuation (kept, alone).
        let mut start = 0;
        for (i, &b) in norm.iter().enumerate() {
            if is_ws(b) {
                self.word(&norm[start..i], out);
                start = i + 1;
            } else if b.is_ascii_punctuation() {
                self.word(&norm[start..i], out);
                self.word(&norm[i..i + 1], out);
                start = i + 1;
            }
        }
        self.word(&norm[start..], out);
        match self.truncate {
            None => {}
            Some(Truncate::Right(n)) => out.truncate(n),
            Some(Truncate::Left(n)) => {
                if out.len() > n {
                    out.drain(..out.len() - n);
                }
            }
        }
        true
    }

    /// WordPiece on one ASCII word (nothing for an empty one).
    #[inline]
    fn word(&self, word: &[u8], out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.len() > self.max_input_chars_per_word {
            out.push(self.unk);
            return;
        }
        // Pure ASCII, so every byte range is a str.
        let word = std::str::from_utf8(word).expect("ASCII");
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let (map, longest) = if start == 0 { (&self.first, self.max_first) } else { (&self.cont, self.max_cont) };
            let mut end = word.len().min(start + longest);
            let mut found = None;
            while start < end {
                if let Some(id) = map.get(&word[start..end]) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes_match_the_definitions_used() {
        // Rust's White_Space in ASCII: \t \n \v \f \r and space (not 0x1c-0x1f).
        let ws: Vec<u8> = (0u8..128).filter(|&b| is_ws(b)).collect();
        assert_eq!(ws, vec![9, 10, 11, 12, 13, 32]);
        // HF's ASCII punctuation ranges 33-47, 58-64, 91-96, 123-126.
        let p: Vec<u8> = (0u8..128).filter(|b| b.is_ascii_punctuation()).collect();
        let want: Vec<u8> = (33..=47).chain(58..=64).chain(91..=96).chain(123..=126).collect();
        assert_eq!(p, want);
    }

    #[test]
    fn fx_hasher_distinguishes_lengths() {
        let h = |s: &str| {
            let mut h = FxHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h("abcdefgh"), h("abcdefgh\0"));
    }
}
