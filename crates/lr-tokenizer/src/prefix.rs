//! Cutting a long text before tokenizing it, without changing the ids a model reads.
//!
//! Hugging Face `tokenizers` cannot be interrupted and keeps offsets, alignments and splits for
//! every byte: about 55× the text in memory (1.5 GB for a 14 MB document). A model only reads its
//! first `max_length` ids, so a long text is cut first — at a place where the cut provably cannot
//! change the ids before it.
//!
//! # The cut
//!
//! A *safe cut* is a char boundary `c` such that the ids of `text[..c]` are exactly the first ids
//! of `text` (an exact prefix, not merely "the same first few"). [`PrefixCutter::prefix`] takes a
//! byte budget `K = max(4096, 24 × max_tokens)`, finds the last safe cut at or below `K`,
//! tokenizes that prefix (without special tokens) and returns it once it yields at least
//! `max_tokens + 16` ids (or as many as the tokenizer's own right truncation keeps); otherwise `K`
//! grows ×4 until it reaches the text's length, and then the whole text is returned. A text no
//! longer than the first budget is returned as it is, without any tokenization. Nothing longer
//! than [`MAX_TOKENIZED_BYTES`] (4 MiB) is ever tokenized: a longer text with no fitting cut
//! within that bound (a giant run without word breaks, or any text over it for a tokenizer
//! that is never cut) is refused with an error.
//!
//! Which cuts are safe depends on the tokenizer's pipeline; [`PrefixCutter::new`] recognises the
//! families below and turns the cutting off (the whole text is returned: correct, and refused
//! over [`MAX_TOKENIZED_BYTES`]) for anything else. Two facts hold for every family:
//!
//! - *Added tokens* are split out of the raw text (and, for `normalized` ones, out of the
//!   normalised text) before anything else. An occurrence straddling `c` would contain the image
//!   of `text[c]` at an index ≥ 1 of its content, so no cut is made before a char that appears at
//!   index ≥ 1 of any added token's content or normalised content (nor before whitespace when a
//!   space or `▁` does). Occurrences wholly before `c` are found identically in both texts;
//!   `lstrip`/`rstrip` only move whitespace around a match (never past a non-whitespace char, and
//!   `c` follows one or whitespace yields no ids); `single_word` looks one char beyond a match,
//!   and whitespace, ASCII punctuation other than `_` and end of text are all "not a word char".
//! - *Normalisers* are only accepted when they are per-char or anchored at an end of the text:
//!   Lowercase, NFC/NFD/NFKC/NFKD, StripAccents, BertNormalizer, Strip, Prepend and (SentencePiece
//!   only) `Replace(" " → "▁")`. Every cut is before a starter that composes with nothing (ASCII
//!   whitespace, ASCII punctuation, a CJK ideograph, an ASCII alphanumeric), so canonical
//!   reordering and composition never cross it: the normalised prefix is a prefix of the
//!   normalised text.
//!
//! Families (`X` is the char just before the cut):
//!
//! 1. **Whitespace-dropping pre-tokenizers** — BERT WordPiece (`BertPreTokenizer`), `Whitespace`,
//!    `WhitespaceSplit` — first in the pre-tokenizer sequence: cut before `' '`, `\t`, `\n` or
//!    `\r` (any `X`, also inside a long whitespace run). Those chars stay whitespace through every
//!    accepted normaliser (BertNormalizer maps them to a space), whitespace ends a pre-token and
//!    yields no id, so the pre-tokens of the prefix are exactly those of the text before `c`, and
//!    every model works per pre-token. With `BertPreTokenizer` also before ASCII punctuation (each
//!    one its own pre-token) and, when a BertNormalizer pads Chinese characters, before a CJK
//!    ideograph. With a WordPiece or WordLevel model, also inside a giant word: where the
//!    `max(W, L)` bytes before the cut and the `L` after it are ASCII alphanumerics (`W` =
//!    `max_input_chars_per_word` + 1 for WordPiece, longest vocabulary entry + 1 for WordLevel;
//!    `L` = the longest added token, each of which must contain a non-alphanumeric char), the
//!    pre-token holding the cut is too long for the model in both texts and is one unknown token
//!    in both.
//! 2. **Regex splitters** — byte-level BPE: `ByteLevel { use_regex: true }` (the GPT-2 regex) or
//!    `Split(regex, Isolated)` whose alternatives are all known GPT-2/Llama-3/Qwen2/o200k ones and
//!    include `\s+` — first in the sequence (ByteLevel and anything else may follow): cut before a
//!    space or tab after a non-whitespace `X`, or before `\n`/`\r` after an ASCII alphanumeric
//!    `X` (`\n`/`\r` after any non-whitespace `X` when no alternative has a `[\r\n]*` tail). No
//!    alternative lets a match run from a non-whitespace char into a space or tab (the letter,
//!    digit, contraction and punctuation alternatives stop at whitespace; whitespace alternatives
//!    contain no `X`; only the punctuation alternative's `[\r\n]*` tail eats newlines, and it
//!    cannot contain a letter or digit), and an alternative that stops at `text[c]` also stops at
//!    the end of the prefix, the only lookahead `(?!\S)` never reaching past `X`. So the regex
//!    matches before `c` are the same in both texts and one ends at `c`; every later step works
//!    per split. `X` may be any non-whitespace char when the normalisers are among NFC, NFD,
//!    Lowercase, Strip and Prepend (Qwen2's NFC, Llama-3 and GPT-2's none); with
//!    char-removing ones (BertNormalizer, StripAccents, NFKC/NFKD) it must be ASCII graphic.
//! 3. **Metaspace with `split: true`** (SentencePiece Unigram/BPE conversions): cut before a
//!    space after a non-whitespace `X`: the space becomes `▁`, which starts a new pre-token.
//! 4. **SentencePiece BPE on the whole text** — no pre-tokenizer (Llama-2/Mistral:
//!    `Prepend("▁")` + `Replace(" " → "▁")`) or `Metaspace { split: false }`, a BPE model without
//!    dropout, subword prefix/suffix or `ignore_merges`, byte fallback allowed: the merges run
//!    over the whole string. Cut before a space after an `X` that is a one-char vocabulary entry
//!    and for which no vocabulary entry contains `X▁`. BPE only ever merges two adjacent symbols
//!    into a vocabulary entry that is their concatenation; the symbols beside the cut end with `X`
//!    and start with `▁`, so no merge can join them. The merges on either side never see each
//!    other, and those of the left side happen in the same relative (rank, position) order as on
//!    the prefix alone: the ids of the prefix are the ids of the text before the cut. (Byte
//!    fallback and unknown fusing act on chars not in the vocabulary, never on `X` or `▁`.)
//!
//! Everything else — Precompiled/NMT/ByteLevel normalisers, other Replace patterns, unknown
//! regexes, Digits/Punctuation/UnicodeScripts/Delimiter/FixedLength/bare ByteLevel as first
//! pre-tokenizer, BPE dropout, padding, left truncation, whole-string Unigram/WordPiece/WordLevel,
//! added tokens containing whitespace or `▁` after their first char (for whitespace cuts) — falls
//! back to the whole text; [`PrefixCutter::why_not`] says why.
//!
//! The 16-id margin is not needed by the argument above (the prefix's ids are an exact prefix of
//! the text's); it keeps a count of at least 2 (a one-id prefix might be a single vocabulary
//! lookup) and would confine any overlooked end-of-text effect to ids past `max_tokens`.

use std::collections::HashSet;

use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::split::SplitPattern;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, NormalizedString, Normalizer, SplitDelimiterBehavior, Tokenizer, TruncationDirection};

/// The first byte budget is `max(MIN_BUDGET_BYTES, BUDGET_BYTES_PER_TOKEN × max_tokens)`.
pub const MIN_BUDGET_BYTES: usize = 4096;
/// Bytes per wanted token in the first budget (English is 4–5 bytes per token).
pub const BUDGET_BYTES_PER_TOKEN: usize = 24;
/// Ids the prefix must yield beyond `max_tokens`.
pub const TOKEN_MARGIN: usize = 16;
/// Budget growth when a prefix is too short.
const GROWTH: usize = 4;
/// The most bytes of one text ever handed to the tokenizer. Hugging Face keeps about 55× the
/// text in memory (4 MiB → ≈ 220 MB), and a failed allocation aborts the process: in a backend,
/// a restart of the whole server. A longer text must have a safe cut within its first
/// `MAX_TOKENIZED_BYTES` that yields the ids wanted, else it is refused with an error.
pub const MAX_TOKENIZED_BYTES: usize = 4 << 20;

/// Cuts long texts for one tokenizer (see the module documentation). Built once per tokenizer:
/// recognising the pipeline may scan the vocabulary.
#[derive(Clone, Debug)]
pub struct PrefixCutter {
    rules: Option<Rules>,
    why_not: Option<String>,
    /// The tokenizer's right truncation: `encode(_, false)` never yields more ids.
    cap: Option<usize>,
    min_bytes: usize,
    bytes_per_token: usize,
    /// [`MAX_TOKENIZED_BYTES`] (tests use smaller ones).
    max_bytes: usize,
}

/// What a cut requires of the char just before it.
#[derive(Clone, Debug)]
enum Before {
    Any,
    NonWhitespace,
    AsciiGraphic,
    AsciiAlphanumeric,
    /// One of these chars; `ascii`: only ASCII ones, in both cases (the normalisers may lowercase).
    OneOf { chars: HashSet<char>, ascii: bool },
}

impl Before {
    fn allows(&self, x: char) -> bool {
        match self {
            Before::Any => true,
            Before::NonWhitespace => !x.is_whitespace(),
            Before::AsciiGraphic => x.is_ascii_graphic(),
            Before::AsciiAlphanumeric => x.is_ascii_alphanumeric(),
            Before::OneOf { chars, ascii: false } => chars.contains(&x),
            Before::OneOf { chars, ascii: true } => {
                x.is_ascii_graphic() && chars.contains(&x) && chars.contains(&x.to_ascii_lowercase())
            }
        }
    }
}

/// A cut inside a run of ASCII alphanumerics (a word too long for the model either way).
#[derive(Clone, Debug)]
struct LongWord {
    left: usize,
    right: usize,
}

#[derive(Clone, Debug, Default)]
struct Rules {
    space: Option<Before>,
    tab: Option<Before>,
    newline: Option<Before>,
    /// Before ASCII punctuation other than `_` (BertPreTokenizer).
    punct: bool,
    /// Before a CJK ideograph (BertNormalizer `handle_chinese_chars` + BertPreTokenizer).
    cjk: bool,
    long_word: Option<LongWord>,
    /// Chars found at index ≥ 1 of an added token's content or normalised content.
    inner: HashSet<char>,
}

impl PrefixCutter {
    /// Recognises `tok`'s pipeline. Cutting is off (the whole text is always returned) for a
    /// tokenizer outside the families of the module documentation.
    pub fn new(tok: &Tokenizer) -> Self {
        let (rules, why_not) = match Rules::detect(tok) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        PrefixCutter {
            rules,
            why_not,
            cap: tok.get_truncation().map(|t| t.max_length),
            min_bytes: MIN_BUDGET_BYTES,
            bytes_per_token: BUDGET_BYTES_PER_TOKEN,
            max_bytes: MAX_TOKENIZED_BYTES,
        }
    }

    /// Another bound on the bytes tokenized (tests use tiny ones).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Another first budget: `max(min_bytes, bytes_per_token × max_tokens)` (tests use tiny
    /// ones to cut short texts).
    pub fn with_budget(mut self, min_bytes: usize, bytes_per_token: usize) -> Self {
        self.min_bytes = min_bytes.max(1);
        self.bytes_per_token = bytes_per_token;
        self
    }

    /// Whether texts are cut at all.
    pub fn cuts(&self) -> bool {
        self.rules.is_some()
    }

    /// Why texts are never cut (`None` when they are).
    pub fn why_not(&self) -> Option<&str> {
        self.why_not.as_deref()
    }

    /// A prefix of `text` whose ids (`encode(_, false)`: no special tokens, the tokenizer's own
    /// truncation) begin with the first `max_tokens` ids of `text`'s — all of them when `text`
    /// has fewer — so that a model reading at most `max_tokens` of the text's ids sees the same
    /// ids. `tok` must be the tokenizer this cutter was built for.
    pub fn prefix<'t>(&self, tok: &Tokenizer, text: &'t str, max_tokens: usize) -> Result<&'t str, String> {
        self.prefix_by(text, max_tokens, |p| crate::plain_ids(tok, p).map(|ids| ids.len()))
    }

    /// [`PrefixCutter::prefix`] with the tokenization done by `count`, which must return
    /// `plain_ids(tok, p).len()` (e.g. through a faster tokenizer giving the same ids).
    pub fn prefix_by<'t>(
        &self,
        text: &'t str,
        max_tokens: usize,
        mut count: impl FnMut(&str) -> Result<usize, String>,
    ) -> Result<&'t str, String> {
        let Some(rules) = &self.rules else { return self.whole(text, max_tokens) };
        // Every budget is clamped to the bound, so that the last one searched is the bound itself
        // whatever the text's length.
        let mut budget = self.first_budget(max_tokens).min(self.max_bytes);
        let mut need = max_tokens.saturating_add(TOKEN_MARGIN);
        if let Some(cap) = self.cap {
            need = need.min(cap);
        }
        let mut searched = 0;
        while budget < text.len() {
            if let Some(c) = rules.last_cut(text, searched, budget) {
                if count(&text[..c])? >= need {
                    return Ok(&text[..c]);
                }
            }
            if budget == self.max_bytes {
                return Err(self.too_long(text, max_tokens));
            }
            // A cut at or below `budget` gives no more ids than this one: look above it.
            searched = budget;
            budget = budget.saturating_mul(GROWTH).min(self.max_bytes);
        }
        Ok(text)
    }

    /// The longest prefix of `text` of at most [`MAX_TOKENIZED_BYTES`] whose ids are an exact
    /// prefix of `text`'s: `text` itself when it is no longer, else its last safe cut within the
    /// bound (for callers that want as many of a text's ids as may be had, e.g. a fit's document
    /// frequencies). An error when there is none.
    pub fn bounded<'t>(&self, text: &'t str) -> Result<&'t str, String> {
        if text.len() <= self.max_bytes {
            return Ok(text);
        }
        let cut = self.rules.as_ref().and_then(|rules| rules.last_cut(text, 0, self.max_bytes));
        cut.map(|c| &text[..c]).ok_or_else(|| self.too_long(text, 0))
    }

    /// How many leading bytes of a text [`Self::bounded`] looks at: its bound and the few bytes
    /// after it that decide whether a cut there keeps the ids. A text first cut to at least
    /// this many bytes (or chars) is bounded exactly as the whole text is, so a reader may
    /// fetch no more of a longer one.
    pub fn bounded_reads(&self) -> usize {
        let word = self.rules.as_ref().and_then(|r| r.long_word.as_ref()).map_or(0, |lw| lw.right);
        self.max_bytes + word.max(4)
    }

    fn whole<'t>(&self, text: &'t str, max_tokens: usize) -> Result<&'t str, String> {
        if text.len() <= self.max_bytes {
            Ok(text)
        } else {
            Err(self.too_long(text, max_tokens))
        }
    }

    fn too_long(&self, text: &str, max_tokens: usize) -> String {
        let why = match (&self.why_not, max_tokens) {
            (Some(why), _) => format!("this tokenizer's texts are never cut ({why})"),
            (None, 0) => "they hold no place where it can be cut between words".to_owned(),
            (None, n) => format!("they hold no place where a cut keeps its first {n} tokens (a run of text without word breaks?)"),
        };
        format!("a text of {} bytes is too long to tokenize: at most its first {} bytes are tokenized, and {why}", text.len(), self.max_bytes)
    }

    /// The first `max_tokens` ids of `ids(text)`, where `ids` returns `plain_ids(tok, _)` (or the
    /// same ids faster), computed on a bounded prefix of `text`.
    pub fn first_ids(
        &self,
        text: &str,
        max_tokens: usize,
        mut ids: impl FnMut(&str) -> Result<Vec<u32>, String>,
    ) -> Result<Vec<u32>, String> {
        let mut last: Option<(usize, Vec<u32>)> = None;
        let cut = self.prefix_by(text, max_tokens, |p| {
            let v = ids(p)?;
            let n = v.len();
            last = Some((p.len(), v));
            Ok(n)
        })?;
        let mut out = match last {
            Some((len, v)) if len == cut.len() => v,
            _ => ids(cut)?,
        };
        out.truncate(max_tokens);
        Ok(out)
    }

    fn first_budget(&self, max_tokens: usize) -> usize {
        self.min_bytes.max(self.bytes_per_token.saturating_mul(max_tokens))
    }
}

/// A prefix of `text` whose ids without special tokens begin with the first `max_tokens` ids of
/// `text`'s (see [`PrefixCutter`]; for repeated calls build one and use
/// [`PrefixCutter::prefix`]). Texts up to the first budget (4 KB, or 24 bytes per token) come
/// back whole without any work.
pub fn prefix_for_tokens<'t>(tok: &Tokenizer, text: &'t str, max_tokens: usize) -> Result<&'t str, String> {
    if text.len() <= MIN_BUDGET_BYTES.max(BUDGET_BYTES_PER_TOKEN.saturating_mul(max_tokens)).min(MAX_TOKENIZED_BYTES) {
        return Ok(text);
    }
    PrefixCutter::new(tok).prefix(tok, text, max_tokens)
}

/// HF `normalizers/bert.rs` `is_chinese_char`.
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Regex alternatives (GPT-2, Llama-3, Qwen2/2.5/3/3.5, o200k) that never run from a
/// non-whitespace char into whitespace (a leading optional char may be whitespace).
const WORD_ALTERNATIVES: &[&str] = &[
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    " ?\\p{L}+",
    " ?\\p{N}+",
    " ?[^\\s\\p{L}\\p{N}]+",
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+",
    "\\p{N}",
    "\\p{N}{1,3}",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
];
/// Punctuation runs with a newline tail: they run from a non-letter, non-digit into `\r`/`\n`.
const NEWLINE_TAIL_ALTERNATIVES: &[&str] = &[
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*",
    " ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*",
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*",
];
/// Whitespace-only alternatives.
const SPACE_ALTERNATIVES: &[&str] = &["\\s*[\\r\\n]+", "\\s+(?!\\S)", "\\s+"];
/// The GPT-2 regex `ByteLevel { use_regex: true }` applies.
const GPT2_PATTERN: &str = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/// Top-level alternatives of a regex (`|` outside groups and classes).
fn alternatives(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut class, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, ch) in pattern.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' => escaped = true,
            '[' if !class => class = true,
            ']' if class => class = false,
            '(' if !class => depth += 1,
            ')' if !class => depth = depth.saturating_sub(1),
            '|' if !class && depth == 0 => {
                out.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&pattern[start..]);
    out
}

/// `Some(has_newline_tail)` when every alternative of `pattern` is known and `\s+` is one.
fn known_regex(pattern: &str) -> Option<bool> {
    let alts = alternatives(pattern);
    let mut tail = false;
    for a in &alts {
        if NEWLINE_TAIL_ALTERNATIVES.contains(a) {
            tail = true;
        } else if !WORD_ALTERNATIVES.contains(a) && !SPACE_ALTERNATIVES.contains(a) {
            return None;
        }
    }
    alts.contains(&"\\s+").then_some(tail)
}

/// What the normalisers do, as far as cutting is concerned.
#[derive(Default)]
struct NormInfo {
    /// A normaliser may remove or rewrite non-ASCII chars in ways that matter (BertNormalizer,
    /// StripAccents, NFKC, NFKD).
    rewrites: bool,
    /// Only Prepend / Replace / Strip: every char other than the space is its own image.
    identity: bool,
    /// `Replace(" " → "▁")`.
    space_to_meta: bool,
    chinese: bool,
}

fn normalizers(n: &NormalizerWrapper, info: &mut NormInfo) -> Result<(), String> {
    match n {
        NormalizerWrapper::Sequence(s) => {
            for n in s.as_ref() {
                normalizers(n, info)?;
            }
        }
        NormalizerWrapper::BertNormalizer(b) => {
            info.rewrites = true;
            info.identity = false;
            info.chinese |= b.handle_chinese_chars;
        }
        NormalizerWrapper::StripAccents(_) | NormalizerWrapper::NFKC(_) | NormalizerWrapper::NFKD(_) => {
            info.rewrites = true;
            info.identity = false;
        }
        NormalizerWrapper::NFC(_) | NormalizerWrapper::NFD(_) | NormalizerWrapper::Lowercase(_) => {
            info.identity = false;
        }
        NormalizerWrapper::StripNormalizer(_) | NormalizerWrapper::Prepend(_) => {}
        NormalizerWrapper::Replace(r) => {
            // The pattern is private; its Debug form is `Replace { pattern: String(" "), ... }`.
            let d = format!("{r:?}");
            if !d.starts_with("Replace { pattern: String(\" \"), content: \"▁\",") {
                return Err(format!("unsupported Replace normalizer: {d}"));
            }
            info.space_to_meta = true;
        }
        other => return Err(format!("unsupported normalizer: {other:?}")),
    }
    Ok(())
}

/// How the first pre-tokenizer splits.
enum Split {
    /// Whitespace ends a pre-token and yields nothing; `bert`: BertPreTokenizer.
    DropsWhitespace { bert: bool },
    /// A known GPT-2-style regex.
    Regex { newline_tail: bool },
    /// Metaspace with `split: true`.
    Metaspace,
    /// No split at all: the model sees whole segments; `meta`: the space's image.
    Whole { meta: char },
}

fn first_split(tok: &Tokenizer, space_to_meta: bool) -> Result<Split, String> {
    let whole_space = if space_to_meta { '▁' } else { ' ' };
    let pre = match tok.get_pre_tokenizer() {
        None => return Ok(Split::Whole { meta: whole_space }),
        Some(PreTokenizerWrapper::Sequence(s)) => {
            let steps = s.as_ref();
            match steps {
                [] => return Ok(Split::Whole { meta: whole_space }),
                [PreTokenizerWrapper::Metaspace(m)] if !m.get_split() => {
                    return Ok(Split::Whole { meta: m.get_replacement() })
                }
                [first, ..] => first,
            }
        }
        Some(p) => p,
    };
    let split = match pre {
        PreTokenizerWrapper::BertPreTokenizer(_) => Split::DropsWhitespace { bert: true },
        PreTokenizerWrapper::Whitespace(_) | PreTokenizerWrapper::WhitespaceSplit(_) => {
            Split::DropsWhitespace { bert: false }
        }
        PreTokenizerWrapper::ByteLevel(b) if b.use_regex => {
            Split::Regex { newline_tail: known_regex(GPT2_PATTERN).expect("the GPT-2 regex is known") }
        }
        PreTokenizerWrapper::Split(s) => {
            let SplitPattern::Regex(p) = &s.pattern else {
                return Err(format!("unsupported Split pattern: {:?}", s.pattern));
            };
            if s.invert || s.behavior != SplitDelimiterBehavior::Isolated {
                return Err(format!("unsupported Split behaviour: {:?}, invert {}", s.behavior, s.invert));
            }
            match known_regex(p) {
                Some(newline_tail) => Split::Regex { newline_tail },
                None => return Err(format!("unknown Split regex: {p:?}")),
            }
        }
        PreTokenizerWrapper::Metaspace(m) if m.get_split() => Split::Metaspace,
        PreTokenizerWrapper::Metaspace(m) => Split::Whole { meta: m.get_replacement() },
        other => return Err(format!("unsupported first pre-tokenizer: {other:?}")),
    };
    let whole_metaspace = matches!(split, Split::Whole { .. });
    if whole_metaspace && matches!(tok.get_pre_tokenizer(), Some(PreTokenizerWrapper::Sequence(s)) if s.as_ref().len() > 1) {
        return Err("a Metaspace without split followed by other pre-tokenizers".into());
    }
    if space_to_meta && !matches!(split, Split::Metaspace | Split::Whole { .. }) {
        return Err("Replace(\" \" → \"▁\") before a pre-tokenizer that splits on whitespace".into());
    }
    Ok(split)
}

impl Rules {
    fn detect(tok: &Tokenizer) -> Result<Rules, String> {
        if tok.get_padding().is_some() {
            return Err("padding is enabled".into());
        }
        if let Some(t) = tok.get_truncation() {
            if t.direction == TruncationDirection::Left {
                return Err("left truncation keeps the end of the text".into());
            }
        }
        let mut norm = NormInfo { identity: true, ..Default::default() };
        if let Some(n) = tok.get_normalizer() {
            normalizers(n, &mut norm)?;
        }
        let split = first_split(tok, norm.space_to_meta)?;
        let model = tok.get_model();
        if let ModelWrapper::BPE(bpe) = model {
            if bpe.dropout.is_some_and(|d| d > 0.0) {
                return Err("BPE dropout is random".into());
            }
        }

        // Added tokens: chars at index >= 1 of any content (raw and normalised).
        let mut inner = HashSet::new();
        let mut longest = 0;
        let mut all_have_non_alnum = true;
        let mut single_word = false;
        for (_, t) in tok.get_added_tokens_decoder() {
            let mut forms = vec![t.content.clone()];
            if t.normalized {
                if let Some(n) = tok.get_normalizer() {
                    let mut s = NormalizedString::from(t.content.as_str());
                    n.normalize(&mut s).map_err(|e| format!("cannot normalise {:?}: {e}", t.content))?;
                    forms.push(s.get().to_string());
                }
            }
            for f in &forms {
                inner.extend(f.chars().skip(1));
                longest = longest.max(f.len());
                all_have_non_alnum &= f.chars().any(|c| !c.is_ascii_alphanumeric());
            }
            single_word |= t.single_word;
        }
        let space_inside = inner.contains(&' ') || inner.contains(&'▁');

        let x_rule = if norm.rewrites { Before::AsciiGraphic } else { Before::NonWhitespace };
        let mut rules = Rules::default();
        match split {
            Split::DropsWhitespace { bert } => {
                rules.space = Some(Before::Any);
                rules.tab = Some(Before::Any);
                rules.newline = Some(Before::Any);
                rules.punct = bert;
                rules.cjk = bert && norm.chinese && !single_word && !inner.contains(&' ');
                let w = match model {
                    ModelWrapper::WordPiece(wp) => Some(wp.max_input_chars_per_word.saturating_add(1)),
                    ModelWrapper::WordLevel(wl) => {
                        Some(wl.get_vocab().keys().map(|k| k.chars().count()).max().unwrap_or(0) + 1)
                    }
                    _ => None,
                };
                if let (Some(w), true) = (w, all_have_non_alnum) {
                    rules.long_word = Some(LongWord { left: w.max(longest), right: longest });
                }
            }
            Split::Regex { newline_tail } => {
                rules.space = Some(x_rule.clone());
                rules.tab = Some(x_rule.clone());
                rules.newline = Some(if newline_tail { Before::AsciiAlphanumeric } else { x_rule });
            }
            Split::Metaspace => rules.space = Some(x_rule),
            Split::Whole { meta } => {
                let ModelWrapper::BPE(bpe) = model else {
                    return Err("the model sees whole texts and is not BPE".into());
                };
                if bpe.continuing_subword_prefix.is_some() || bpe.end_of_word_suffix.is_some() {
                    return Err("whole-text BPE with a subword prefix or suffix".into());
                }
                if bpe.ignore_merges {
                    return Err("whole-text BPE with ignore_merges".into());
                }
                let vocab = bpe.get_vocab();
                if !vocab.contains_key(meta.to_string().as_str()) {
                    return Err(format!("{meta:?} is not in the vocabulary"));
                }
                let mut chars: HashSet<char> = vocab
                    .keys()
                    .filter_map(|k| {
                        let mut it = k.chars();
                        let c = it.next()?;
                        it.next().is_none().then_some(c)
                    })
                    .collect();
                // No merge may join a symbol ending in X with one starting with the space's image.
                for k in vocab.keys() {
                    let mut prev = None;
                    for c in k.chars() {
                        if c == meta {
                            if let Some(p) = prev {
                                chars.remove(&p);
                            }
                        }
                        prev = Some(c);
                    }
                }
                chars.remove(&meta);
                chars.remove(&' ');
                chars.retain(|c| !c.is_whitespace());
                rules.space = Some(Before::OneOf { chars, ascii: !norm.identity });
            }
        }
        if space_inside {
            rules.space = None;
            rules.tab = None;
            rules.newline = None;
        }
        rules.inner = inner;
        if rules.space.is_none() && rules.tab.is_none() && rules.newline.is_none() && !rules.punct && !rules.cjk && rules.long_word.is_none() {
            return Err("added tokens contain whitespace: no safe cut".into());
        }
        Ok(rules)
    }

    /// Whether a cut between `x` and `next` (the chars around it) is safe, long words aside.
    fn cut_before(&self, x: char, next: char) -> bool {
        let ok = match next {
            ' ' => self.space.as_ref().is_some_and(|b| b.allows(x)),
            '\t' => self.tab.as_ref().is_some_and(|b| b.allows(x)),
            '\n' | '\r' => self.newline.as_ref().is_some_and(|b| b.allows(x)),
            c if c.is_ascii_punctuation() => self.punct && c != '_',
            c => self.cjk && is_chinese_char(c),
        };
        ok && !self.inner.contains(&next)
    }

    /// The last safe cut `c` with `lo < c <= hi` and `c < text.len()`.
    fn last_cut(&self, text: &str, lo: usize, hi: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut pos = floor_boundary(text, hi.min(text.len().saturating_sub(1)));
        while pos > lo {
            let next = text[pos..].chars().next().expect("pos < len");
            let x = text[..pos].chars().next_back().expect("pos > 0");
            if self.cut_before(x, next) {
                return Some(pos);
            }
            if let Some(lw) = &self.long_word {
                if bytes[pos].is_ascii_alphanumeric() {
                    let start = pos.saturating_sub(lw.left);
                    match bytes[start..pos].iter().rposition(|b| !b.is_ascii_alphanumeric()) {
                        Some(k) => {
                            // Every position after start + k has it in its left window, and the
                            // chars there are alphanumerics (no other rule applies): skip them.
                            pos = floor_boundary(text, start + k);
                            continue;
                        }
                        None => {
                            let right_ok = pos + lw.right <= bytes.len()
                                && bytes[pos..pos + lw.right].iter().all(u8::is_ascii_alphanumeric);
                            if pos >= lw.left && right_ok {
                                return Some(pos);
                            }
                        }
                    }
                }
            }
            pos -= x.len_utf8();
        }
        None
    }
}

/// The largest char boundary `<= i`.
fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_alternatives_split_at_top_level() {
        let qwen2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        assert_eq!(alternatives(qwen2).len(), 7);
        assert_eq!(known_regex(qwen2), Some(true));
        assert_eq!(known_regex(GPT2_PATTERN), Some(false));
        assert_eq!(alternatives("[|]|a"), vec!["[|]", "a"]);
        assert_eq!(known_regex("\\p{N}{1,3}"), None, "no \\s+: whitespace could sit in a gap");
        assert_eq!(known_regex(" ?\\p{L}+|\\s+|x"), None);
    }

    #[test]
    fn floor_boundary_steps_back_into_chars() {
        let s = "aé中";
        assert_eq!(floor_boundary(s, 2), 1);
        assert_eq!(floor_boundary(s, 4), 3);
        assert_eq!(floor_boundary(s, 99), s.len());
    }
}
