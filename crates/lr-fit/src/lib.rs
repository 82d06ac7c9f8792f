//! Fits a LightRetriever query table to the full encoder on the user's own corpus: no labels,
//! no GPU.
//!
//! A lookup query is the L2-normalised (weighted) mean of per-token table rows. The untrained
//! rows (`[CLS] id [SEP]` through the document encoder) are dominated by what every row shares,
//! so lookup queries land far from where the encoder puts the same text. Here random word spans
//! of the corpus play the queries: each span is encoded by the full model (the target) and the
//! rows of its tokens are fitted so that their mean reproduces it — a ridge regression towards
//! a prior (the untrained rows, or a global linear map of them), solved by conjugate gradients
//! over the sparse span × token matrix. An optional refinement then trains the rows for
//! retrieval itself: contrastive against the span's source document, or distilling the full
//! encoder's ranking of the corpus.
//!
//! Everything is deterministic given [`FitOptions::seed`]; nothing prints, nothing panics on bad
//! input: errors are [`FitError`] values, progress goes to a callback. Settings chosen on a
//! held-out split of the corpus (never on benchmark queries): see docs/quality.md.

mod maps;
pub mod progress;
mod refine;
mod rng;
pub mod solve;
mod spd;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use lr_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

pub use crate::maps::{map_unseen_rows, map_unseen_rows_with_progress};
use crate::maps::linear_prior;
use crate::rng::Rng;
use crate::solve::Design;

/// Queries are cut at this many tokens by the lookup encoder; spans are cut the same way.
const MAX_QUERY_TOKENS: usize = 512;

/// Encodes texts with the full model, as documents are encoded (L2-normalised vectors).
pub trait SpanEncoder {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// Sequences per forward pass for spans: measured best for 5–60-token spans on this machine's
/// 2 CPU cores (≈10% faster than the document batch of 32; 256 and more is slower again).
pub const SPAN_BATCH: usize = 64;

impl SpanEncoder for lr_encoders::BertEncoder {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let ids = texts
            .iter()
            .map(|t| self.document_ids(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        self.encode_id_sequences(&ids, SPAN_BATCH).map_err(|e| e.to_string())
    }
}

impl SpanEncoder for lr_encoders::DocumentEncoder {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.encode_document_ids(texts, SPAN_BATCH).map_err(|e| e.to_string())
    }
}

/// Per-row weights of the lookup mean (stored in the table, used at query time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Plain mean.
    None,
    /// `idf(t)^idf_power` with the BM25 idf `ln(1 + (N − df + 0.5)/(df + 0.5))` over the corpus.
    Idf,
}

/// What the fitted rows are pulled towards (and what tokens never seen in a span keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prior {
    /// The untrained rows themselves.
    Init,
    /// The untrained rows through one global linear map (D × D, least squares on the spans):
    /// tokens no span contains move with the rest instead of staying untrained.
    Linear,
}

/// Optional second stage after the ridge fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refine {
    None,
    /// InfoNCE of the lookup span vector against all document vectors; the positive is the
    /// document the span was cut from.
    Infonce,
    /// KL from the full encoder's softmax over the documents (the span's target vector against
    /// every document) to the lookup vector's: listwise distillation of the ranking.
    Distill,
}

/// Fitting options; every field has a default, unknown fields are refused (they come from a
/// user's jsonb argument).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FitOptions {
    pub seed: u64,
    /// Training spans cut from each training document.
    pub spans_per_doc: usize,
    /// Spans per training document asked as questions (one of [`QUESTION_OPENERS`] before the
    /// span, "?" after it), each encoded by the full model. The fit then runs twice over the same
    /// encodings: with these spans among the training spans, for the rows of the question words
    /// (the tokens of the openers and "?"), and without them, for every other row — so the
    /// question words learn what the full model makes of a question, and no other row moves
    /// (docs/quality.md, "Question words fitted on questions"). 0 = none: the fit as it was
    /// before this option.
    pub question_spans_per_doc: usize,
    /// Span length in whitespace-separated words, uniform in `min_words..=max_words`.
    pub min_words: usize,
    pub max_words: usize,
    /// Ridge strength towards the prior (objective summed over spans, not averaged).
    pub lambda: f64,
    /// Query-time weights stored in the table.
    pub weighting: Weighting,
    /// Exponent applied to idf.
    pub idf_power: f64,
    /// Fit with the same weighted mean the lookup computes (true) or with the plain mean.
    pub fit_weighted: bool,
    pub prior: Prior,
    /// Subtract the mean training target from the targets and the mean row from the prior.
    pub center: bool,
    /// Conjugate-gradient limits.
    pub max_iterations: usize,
    pub tolerance: f64,
    /// Fraction of documents held out of the fit: their spans measure the result.
    pub held_out_fraction: f64,
    /// At most this many held-out documents (a larger corpus holds out a random sample of that
    /// size): every held-out span is scored against every document, so the measure's cost grows
    /// with the corpus squared without it.
    pub max_held_out_docs: usize,
    /// Pseudo-queries per held-out document and their length (fixed, broad, independent of the
    /// training span settings so that settings are compared on the same questions).
    pub held_out_spans_per_doc: usize,
    pub held_out_min_words: usize,
    pub held_out_max_words: usize,
    /// Agreement = |top-k(lookup) ∩ top-k(full)| / k for the held-out spans (see
    /// [`FitReport::agreement_corpus`]); 0 skips it.
    pub agreement_k: usize,
    pub refine: Refine,
    pub refine_epochs: usize,
    /// Adam step size for refinement.
    pub refine_lr: f64,
    pub refine_temperature: f64,
    pub refine_batch: usize,
    /// Negatives: only the batch's own source documents (true) or every document (false).
    pub refine_in_batch: bool,
    /// Extra spans per training document for InfoNCE refinement (no full-encoder targets
    /// needed, so they cost no model time), and their length in words.
    pub refine_spans_per_doc: usize,
    pub refine_min_words: usize,
    pub refine_max_words: usize,
    /// More refinement spans per training document, asked as questions: one of
    /// [`QUESTION_OPENERS`] before a span of `refine_min_words..=refine_max_words` words and "?"
    /// after it. Documents seldom ask, so the rows of question words — heavily weighted by idf for
    /// that very reason — are otherwise never trained on the queries they appear in
    /// (docs/quality.md, "Question words fitted on questions": measured, not the default). 0 =
    /// none.
    pub refine_question_spans_per_doc: usize,
    /// Keep the rows of the refinement epoch that did best on the held-out split (known-item
    /// MRR over the documents, else agreement); needs held-out documents.
    pub refine_early_stop: bool,
    /// Inverse-cloze refinement pairs per training document (0 = none): a span of
    /// `refine_cloze_min_words..=refine_cloze_max_words` words cut out of the document, whose
    /// positive is the rest of the document encoded by the full model without it (one more
    /// full-model encoding per pair). The query's words are then not guaranteed to be in its
    /// target, as with real queries.
    pub refine_cloze_per_doc: usize,
    pub refine_cloze_min_words: usize,
    pub refine_cloze_max_words: usize,
    /// Pull of the refined rows towards the ridge solution (summed squared difference, per span).
    pub refine_anchor: f64,
    /// Set every row the ridge fit did not determine (tokens only in refinement spans, only in
    /// held-out documents, or in no document) to `P_t · M`: `P` the prior rows, `M` the D × D
    /// least-squares map from the ridge-fitted tokens' prior rows to their final rows. Left
    /// alone, such a row stays at (or, refined by a few Adam steps, near) its untrained row,
    /// off in direction and scale (fitted rows are ≈ 1.5× longer), and a query word the fit
    /// barely saw (often a rare one, so with a large idf weight) pulls the lookup off target
    /// (docs/quality.md). Early stopping judges the epochs before the map. `false` keeps the
    /// prior (or refined) rows.
    pub map_unseen_rows: bool,
    /// Also return the rows as they were before that map ([`FittedTable::unmapped_rows`]), for
    /// an evaluation that reports both without fitting twice. Not a user option: not in JSON.
    #[serde(skip)]
    pub keep_unmapped_rows: bool,
    /// Upper bound on training spans (documents are subsampled beyond it).
    pub max_spans: usize,
    /// Texts per encoder call (progress granularity).
    pub encode_batch: usize,
}

/// Defaults: the settings chosen on the held-out split (docs/quality.md): ridge λ = 0.1 towards
/// the untrained rows on 8 encoded 4–16-word spans per document, idf-weighted query mean, then 8
/// epochs of InfoNCE (in-batch negatives, τ = 0.05, Adam 5e-4) on 32 extra spans per document,
/// keeping the epoch with the best held-out known-item MRR; rows no span trained are then mapped
/// into the fitted space; the question words' rows come from a second fit that also sees 2
/// question-framed spans per document.
impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            seed: 42,
            spans_per_doc: 8,
            question_spans_per_doc: 2,
            min_words: 4,
            max_words: 16,
            lambda: 0.1,
            weighting: Weighting::Idf,
            idf_power: 1.0,
            fit_weighted: false,
            prior: Prior::Init,
            center: false,
            max_iterations: 500,
            tolerance: 1e-4,
            held_out_fraction: 0.1,
            max_held_out_docs: 2000,
            held_out_spans_per_doc: 8,
            held_out_min_words: 4,
            held_out_max_words: 64,
            agreement_k: 10,
            refine: Refine::Infonce,
            refine_epochs: 8,
            refine_lr: 5e-4,
            refine_temperature: 0.05,
            refine_batch: 256,
            refine_in_batch: true,
            refine_spans_per_doc: 32,
            refine_min_words: 4,
            refine_max_words: 16,
            refine_question_spans_per_doc: 0,
            refine_early_stop: true,
            refine_cloze_per_doc: 0,
            refine_cloze_min_words: 6,
            refine_cloze_max_words: 16,
            refine_anchor: 0.0,
            map_unseen_rows: true,
            keep_unmapped_rows: false,
            max_spans: 200_000,
            encode_batch: 256,
        }
    }
}

impl FitOptions {
    pub fn from_json(v: &serde_json::Value) -> Result<Self, FitError> {
        let o: FitOptions =
            serde_json::from_value(v.clone()).map_err(|e| FitError::InvalidOption(e.to_string()))?;
        o.validate()?;
        Ok(o)
    }

    pub fn validate(&self) -> Result<(), FitError> {
        let bad = |m: String| Err(FitError::InvalidOption(m));
        if self.spans_per_doc == 0 {
            return bad("spans_per_doc must be at least 1".into());
        }
        if self.min_words == 0 || self.max_words < self.min_words {
            return bad(format!(
                "need 1 <= min_words <= max_words (got {} and {})",
                self.min_words, self.max_words
            ));
        }
        if self.held_out_min_words == 0 || self.held_out_max_words < self.held_out_min_words {
            return bad("need 1 <= held_out_min_words <= held_out_max_words".into());
        }
        if self.refine_cloze_min_words == 0 || self.refine_cloze_max_words < self.refine_cloze_min_words {
            return bad("need 1 <= refine_cloze_min_words <= refine_cloze_max_words".into());
        }
        if self.refine_min_words == 0 || self.refine_max_words < self.refine_min_words {
            return bad("need 1 <= refine_min_words <= refine_max_words".into());
        }
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return bad(format!("lambda must be positive and finite (got {})", self.lambda));
        }
        if !(self.idf_power.is_finite() && self.idf_power >= 0.0) {
            return bad("idf_power must be finite and non-negative".into());
        }
        if !(self.tolerance > 0.0 && self.tolerance.is_finite()) {
            return bad("tolerance must be positive".into());
        }
        if !(0.0..=0.5).contains(&self.held_out_fraction) {
            return bad(format!("held_out_fraction must be in [0, 0.5] (got {})", self.held_out_fraction));
        }
        if !(self.refine_lr > 0.0 && self.refine_lr.is_finite())
            || !(self.refine_temperature > 0.0 && self.refine_temperature.is_finite())
            || !(self.refine_anchor >= 0.0 && self.refine_anchor.is_finite())
        {
            return bad("refine_lr and refine_temperature must be positive, refine_anchor non-negative".into());
        }
        if self.center && self.question_spans_per_doc > 0 {
            // Each fit would subtract its own mean target: the kept rows would sit apart.
            return bad("center needs question_spans_per_doc: 0".into());
        }
        if self.refine_batch == 0 || self.encode_batch == 0 || self.max_spans == 0 || self.max_held_out_docs == 0 {
            return bad("refine_batch, encode_batch, max_spans and max_held_out_docs must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    /// No documents were given.
    EmptyCorpus,
    /// No document (or no span) produced a single token.
    NoTokens,
    InvalidOption(String),
    /// Inputs that do not fit together (row count, dimensions, token ids outside the table).
    InvalidInput(String),
    /// The full encoder failed or returned something unusable.
    Encoder(String),
    Tokenizer(String),
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::EmptyCorpus => write!(f, "cannot fit a query table on an empty corpus"),
            FitError::NoTokens => write!(f, "the corpus has no text to fit on (no document produced a token)"),
            FitError::InvalidOption(m) => write!(f, "invalid fit option: {m}"),
            FitError::InvalidInput(m) => write!(f, "{m}"),
            FitError::Encoder(m) => write!(f, "the full encoder failed: {m}"),
            FitError::Tokenizer(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for FitError {}

/// What the fit did and how well (all "before" values are for the untrained table).
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub docs: usize,
    pub docs_train: usize,
    pub docs_held_out: usize,
    /// (span, full-encoder target) pairs fitted on / held out.
    pub pairs_train: usize,
    pub pairs_held_out: usize,
    pub vocab: usize,
    pub dims: usize,
    /// Rows the ridge fit determined (tokens seen in a training span).
    pub tokens_fitted: usize,
    /// Every other row, set from the map ([`FitOptions::map_unseen_rows`]; 0 when it is off,
    /// and then those rows keep the prior, or their refined value for tokens only in
    /// refinement spans).
    pub tokens_mapped: usize,
    /// Question spans encoded (`question_spans_per_doc`) and the question-word rows fitted to them.
    pub pairs_question: usize,
    pub question_rows: usize,
    pub solver_iterations: usize,
    pub solver_relative_residual: f64,
    /// Ridge objective Σ_s ‖a_s X − y_s‖² + λ‖X − P‖² at the prior and at the solution.
    pub objective_before: f64,
    pub objective_after: f64,
    /// Mean squared error between a span's (weighted) row mean and its target, in the fit's
    /// target space; "before" = the prior rows.
    pub loss_train_before: f64,
    pub loss_train_after: f64,
    pub loss_held_out_before: Option<f64>,
    pub loss_held_out_after: Option<f64>,
    /// Mean cosine between the lookup vector of a held-out span and its full encoding;
    /// before = untrained table, plain mean; after = the fitted table with its weights.
    pub cosine_held_out_before: Option<f64>,
    pub cosine_held_out_after: Option<f64>,
    /// Mean top-k overlap (fraction) between lookup and full-encoder retrieval for the held-out
    /// spans, over `agreement_corpus`: "documents" when document vectors were given (or encoded
    /// for refinement), else "training spans" (the training spans' full encodings).
    pub agreement_k: usize,
    pub agreement_corpus: Option<String>,
    pub agreement_before: Option<f64>,
    pub agreement_after: Option<f64>,
    /// Fraction of held-out spans whose source document is in the top k: full encoder,
    /// untrained lookup, fitted lookup.
    pub source_top_k_full: Option<f64>,
    pub source_top_k_before: Option<f64>,
    pub source_top_k_after: Option<f64>,
    /// Mean reciprocal rank (within the top k) of a held-out span's source document: the
    /// known-item measure the settings were chosen by (docs/quality.md).
    pub source_mrr_full: Option<f64>,
    pub source_mrr_before: Option<f64>,
    pub source_mrr_after: Option<f64>,
    pub refine_epochs: usize,
    /// Spans and rows the refinement trained (the ridge's plus the extra refinement spans; with
    /// `map_unseen_rows`, the rows only the refinement trained are then set from the map).
    pub refine_pairs: usize,
    pub refine_tokens: usize,
    /// With early stopping: the epoch whose rows were kept.
    pub refine_best_epoch: Option<usize>,
    /// Per refinement epoch: mean training loss and held-out agreement.
    pub refine_loss: Vec<f64>,
    pub refine_agreement: Vec<f64>,
    pub refine_source_mrr: Vec<f64>,
    pub seconds_encode_spans: f64,
    pub seconds_encode_docs: f64,
    pub seconds_solve: f64,
    pub seconds_refine: f64,
    pub seconds_total: f64,
    pub options: FitOptions,
}

/// A fitted table: `rows` is vocab × dims row-major (every row, fitted or not); `weights` are
/// the per-row query-time weights to store with it.
#[derive(Debug, Clone)]
pub struct FittedTable {
    pub rows: Vec<f32>,
    pub weights: Option<Vec<f32>>,
    pub report: FitReport,
    /// The held-out pseudo-queries the report's measures were taken on: (source document
    /// index, span text). Callers can judge other query encoders on the same questions.
    pub held_out_queries: Vec<(usize, String)>,
    /// The ids whose rows the ridge fit determined (every other row keeps its prior, is only
    /// refined, or is set by [`FitOptions::map_unseen_rows`]).
    pub fitted_ids: Vec<u32>,
    /// With [`FitOptions::keep_unmapped_rows`] and the map on: the rows before the map, which
    /// are the rows a fit with `map_unseen_rows: false` returns.
    pub unmapped_rows: Option<Vec<f32>>,
}

/// A span with its source document and its tokens (vocabulary ids, counted).
struct Span {
    doc: usize,
    text: String,
    counts: Vec<(u32, f32)>,
}


fn sample_spans(
    doc: usize,
    text: &str,
    n: usize,
    min_words: usize,
    max_words: usize,
    rng: &mut Rng,
    out: &mut Vec<(usize, String)>,
) {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return;
    }
    let mut seen: Vec<(usize, usize)> = Vec::new();
    for _ in 0..n {
        let hi = max_words.min(words.len());
        let lo = min_words.min(hi);
        let len = rng.between(lo, hi);
        let start = rng.below(words.len() - len + 1);
        if seen.contains(&(start, len)) {
            continue;
        }
        seen.push((start, len));
        out.push((doc, words[start..start + len].join(" ")));
    }
}

/// English question openers for [`FitOptions::question_spans_per_doc`] and
/// [`FitOptions::refine_question_spans_per_doc`]: generic ones, fixed
/// before any corpus of questions was measured with them.
pub const QUESTION_OPENERS: &[&str] = &[
    "what is", "what are", "what does", "how do i", "how can i", "how does", "how to", "why is",
    "why does", "why do", "why are", "when should i", "where is", "which", "is there",
    "is it possible to", "can i", "does", "should i", "who",
];

/// `per_doc` spans of each of `train_docs`, asked as questions: "{opener} {span}?".
fn sample_questions(
    docs: &[&str],
    train_docs: &[usize],
    per_doc: usize,
    min_words: usize,
    max_words: usize,
    rng: &mut Rng,
    out: &mut Vec<(usize, String)>,
) {
    for &i in train_docs {
        let first = out.len();
        sample_spans(i, docs[i], per_doc, min_words, max_words, rng, out);
        for (_, text) in &mut out[first..] {
            let opener = QUESTION_OPENERS[rng.below(QUESTION_OPENERS.len())];
            *text = format!("{opener} {text}?");
        }
    }
}

/// The ids of the question words as a question holds them: each opener's tokens, and "?" both
/// alone and after a word (a tokenizer may tell the two apart, as SentencePiece's "▁?" and "?").
fn question_word_ids(tokenizer: &Tokenizer) -> Result<Vec<u32>, FitError> {
    let ids_of = |text: &str| lr_tokenizer::plain_ids(tokenizer, text).map_err(FitError::Tokenizer);
    let mut ids = ids_of("?")?;
    let word = ids_of("a")?;
    ids.extend(ids_of("a?")?.into_iter().filter(|id| !word.contains(id)));
    for opener in QUESTION_OPENERS {
        ids.extend(ids_of(opener)?);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// What one run of [`fit_query_table_guided`] does with question spans.
enum Questions {
    /// Nothing: the fit without questions (`question_spans_per_doc: 0`).
    Unasked,
    /// Trains on them with the other spans (the first run of a fit with questions).
    Trained,
    /// Does not train on them, and puts the question words' rows of a `Trained` run in place of
    /// its own.
    RowsOf(AskedRows),
}

/// What a fit with questions among its training spans leaves for the fit without them.
struct AskedRows {
    ids: Vec<u32>,
    /// Their rows, one after another, and before the unseen-row map when that was kept.
    rows: Vec<f32>,
    unmapped: Option<Vec<f32>>,
    pairs_train: usize,
    /// Encoding spans, encoding documents, solving, refining.
    seconds: [f64; 4],
}

impl AskedRows {
    fn of(fitted: FittedTable, ids: Vec<u32>, d: usize) -> AskedRows {
        let pick = |rows: &[f32]| -> Vec<f32> {
            ids.iter().flat_map(|&id| rows[id as usize * d..(id as usize + 1) * d].iter().copied()).collect()
        };
        let r = &fitted.report;
        AskedRows {
            rows: pick(&fitted.rows),
            unmapped: fitted.unmapped_rows.as_deref().map(pick),
            pairs_train: r.pairs_train,
            seconds: [r.seconds_encode_spans, r.seconds_encode_docs, r.seconds_solve, r.seconds_refine],
            ids,
        }
    }
}

/// The span × token design: row s holds `c·w / Σ c·w` for each token of the span (`w` = the
/// given per-id weights, or 1), columns numbered by `map`.
fn design<'a>(spans: impl IntoIterator<Item = &'a Span>, weights: Option<&[f32]>, map: &HashMap<u32, u32>) -> Design {
    let mut a = Design::new();
    let mut entries = Vec::new();
    for s in spans {
        entries.clear();
        let w = |id: u32, c: f32| c * weights.map_or(1.0, |w| w[id as usize]);
        let total: f64 = s.counts.iter().map(|&(id, c)| w(id, c) as f64).sum();
        if total > 0.0 {
            for &(id, c) in &s.counts {
                entries.push((map[&id], (w(id, c) as f64 / total) as f32));
            }
        }
        a.push_row(&entries);
    }
    a
}

/// The lookup vector of a counted token list over full-vocabulary rows (un-normalised weighted
/// mean: weights sum to one).
fn weighted_mean(counts: &[(u32, f32)], weights: Option<&[f32]>, rows: &[f32], d: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    let mut total = 0.0f64;
    for &(id, c) in counts {
        let w = c * weights.map_or(1.0, |w| w[id as usize]);
        total += w as f64;
        for (o, r) in out.iter_mut().zip(&rows[id as usize * d..(id as usize + 1) * d]) {
            *o += w * r;
        }
    }
    if total > 0.0 {
        let inv = (1.0 / total) as f32;
        out.iter_mut().for_each(|v| *v *= inv);
    }
}

pub(crate) fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n > 0.0 && n.is_finite() {
        let inv = (1.0 / n) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Indices of the `k` largest scores, best first (ties: lower index first).
pub(crate) fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    lr_search::top_k(scores, k).into_iter().map(|(i, _)| i).collect()
}

/// Most scores [`top_k_rows`] computes at once (64 MB, about twice that with their copy out of
/// the tensor): queries are scored in blocks of rows.
const SCORE_BLOCK_ELEMENTS: usize = 16 << 20;

/// The `k` best documents (m × d) of every query (rows of `q`, n × d), best first: scored a
/// block of queries at a time, so that n × m scores are never held at once (with a corpus of
/// 200,000 documents and 8 spans of each held-out one, that would be over 100 GB).
pub(crate) fn top_k_rows(q: &[f32], n: usize, docs: &Tensor, d: usize, k: usize) -> Result<Vec<Vec<usize>>, FitError> {
    top_k_rows_within(q, n, docs, d, k, SCORE_BLOCK_ELEMENTS)
}

fn top_k_rows_within(q: &[f32], n: usize, docs: &Tensor, d: usize, k: usize, elements: usize) -> Result<Vec<Vec<usize>>, FitError> {
    let e = |e: candle_core::Error| FitError::Encoder(format!("scoring: {e}"));
    let m = docs.dim(0).map_err(e)?.max(1);
    let block = (elements / m).max(1);
    let docs_t = docs.t().map_err(e)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(block) {
        let rows = block.min(n - start);
        let qt = Tensor::from_slice(&q[start * d..(start + rows) * d], (rows, d), &Device::Cpu).map_err(e)?;
        let scores = qt.matmul(&docs_t).map_err(e)?.to_vec2::<f32>().map_err(e)?;
        out.extend(scores.iter().map(|s| top_k(s, k)));
    }
    Ok(out)
}

/// Retrieval measures of held-out lookup vectors against their full encodings.
pub(crate) struct Agreement {
    pub overlap: f64,
    pub source_lookup: f64,
    pub source_full: f64,
    /// Mean reciprocal rank of the source document within the top k (0 when absent).
    pub source_mrr_lookup: f64,
    pub source_mrr_full: f64,
}

pub(crate) fn agreement(
    lookup: &[f32],
    full_top: &[Vec<usize>],
    sources: &[usize],
    docs: &Tensor,
    d: usize,
    k: usize,
) -> Result<Agreement, FitError> {
    let n = sources.len();
    let tops = top_k_rows(lookup, n, docs, d, k)?;
    let (mut overlap, mut src_l, mut src_f, mut mrr_l, mut mrr_f) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let rr = |list: &[usize], want: usize| list.iter().position(|&x| x == want).map_or(0.0, |p| 1.0 / (p + 1) as f64);
    for (i, top) in tops.iter().enumerate() {
        overlap += top.iter().filter(|x| full_top[i].contains(x)).count() as f64 / k as f64;
        src_l += top.contains(&sources[i]) as u8 as f64;
        src_f += full_top[i].contains(&sources[i]) as u8 as f64;
        mrr_l += rr(&top, sources[i]);
        mrr_f += rr(&full_top[i], sources[i]);
    }
    let n = n.max(1) as f64;
    Ok(Agreement {
        overlap: overlap / n,
        source_lookup: src_l / n,
        source_full: src_f / n,
        source_mrr_lookup: mrr_l / n,
        source_mrr_full: mrr_f / n,
    })
}

/// Fits the query table. `docs` are the corpus texts (title and body as the documents were
/// encoded), `init_rows` the untrained table (vocab × dims, row-major). Documents are encoded
/// with `encoder` when agreement or refinement needs their vectors; see
/// [`fit_query_table_with_doc_vectors`] to pass vectors already at hand.
pub fn fit_query_table(
    docs: &[&str],
    tokenizer: &Tokenizer,
    encoder: &dyn SpanEncoder,
    init_rows: &[f32],
    dims: usize,
    options: &FitOptions,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<FittedTable, FitError> {
    fit_query_table_with_doc_vectors(docs, None, tokenizer, encoder, init_rows, dims, options, progress)
}

/// Each document as the fit reads it: whole, or when longer than
/// [`lr_tokenizer::MAX_TOKENIZED_BYTES`] (4 MiB) cut to the last place within that bound where a
/// cut keeps its ids ([`lr_tokenizer::PrefixCutter::bounded`]); an error names a document with
/// no such place. The tokenizer would hold ≈ 55× a text in memory, and the fit runs in a
/// backend.
fn bounded_documents<'d>(docs: &[&'d str], tokenizer: &Tokenizer) -> Result<Vec<&'d str>, FitError> {
    if docs.iter().all(|d| d.len() <= lr_tokenizer::MAX_TOKENIZED_BYTES) {
        return Ok(docs.to_vec());
    }
    let cutter = lr_tokenizer::PrefixCutter::new(tokenizer);
    docs.iter()
        .enumerate()
        .map(|(i, d)| cutter.bounded(d).map_err(|e| FitError::Tokenizer(format!("document {i}: {e}"))))
        .collect()
}

/// In how many of `docs` each vocabulary id occurs (tokenized without special tokens, the
/// whole text, or its first 4 MiB: [`bounded_documents`]). Errors when no document has a token
/// or an id is outside `vocab`.
/// `progress` hears "tokenizing documents" every 1,000 documents (and may abort by unwinding,
/// as the extension's interrupt check does).
pub fn document_frequencies(
    docs: &[&str],
    tokenizer: &Tokenizer,
    vocab: usize,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<Vec<u32>, FitError> {
    if docs.is_empty() {
        return Err(FitError::EmptyCorpus);
    }
    let docs = bounded_documents(docs, tokenizer)?;
    let mut df = vec![0u32; vocab];
    let mut docs_with_tokens = 0usize;
    for (i, text) in docs.iter().enumerate() {
        if i % 1000 == 0 {
            progress("tokenizing documents", i as f64 / docs.len() as f64);
        }
        let mut ids = lr_tokenizer::plain_ids(tokenizer, text).map_err(FitError::Tokenizer)?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(FitError::InvalidInput(format!(
                "token id {bad} of document {i} is outside the model's {vocab} ids (wrong tokenizer?)"
            )));
        }
        ids.sort_unstable();
        ids.dedup();
        docs_with_tokens += !ids.is_empty() as usize;
        ids.iter().for_each(|&id| df[id as usize] += 1);
    }
    if docs_with_tokens == 0 {
        return Err(FitError::NoTokens);
    }
    Ok(df)
}

/// idf of each id, `ln(1 + (N − df + 0.5)/(df + 0.5))^power` over `n_docs` documents: always
/// > 0; ids absent from the corpus get the largest value.
pub fn idf_of(df: &[u32], n_docs: usize, power: f64) -> Vec<f32> {
    let n = n_docs as f64;
    df.iter()
        .map(|&f| {
            let f = f as f64;
            ((1.0 + (n - f + 0.5) / (f + 0.5)).ln().powf(power)) as f32
        })
        .collect()
}

/// Per-id query weights for a sparse model's raw-count queries: the idf of each id over the
/// user's documents (`document_frequencies`, `idf_of` with power 1). A sparse query becomes
/// `count · idf` per token: chosen on held-out pseudo-queries (docs/quality.md), no labels.
pub fn sparse_query_weights(
    docs: &[&str],
    tokenizer: &Tokenizer,
    vocab: usize,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<Vec<f32>, FitError> {
    let df = document_frequencies(docs, tokenizer, vocab, progress)?;
    Ok(idf_of(&df, docs.len(), 1.0))
}

/// The sparse side, for a refinement that sees it (docs/quality.md, issue 17): each refinement
/// span's logit for a document gains `weight` × the z-score (over the span's candidate
/// documents) of its sparse score, `Σ_t count_t · query_weights[t] · doc[t]`. The table is then
/// trained on what the sparse side gets wrong, as a hybrid will use it. The sparse model must
/// share the dense tokenizer's vocabulary (ids index both).
pub struct SparseGuide<'a> {
    /// One sparse vector per document, in order: (id, weight), sorted by id.
    pub doc_vectors: &'a [Vec<(u32, f32)>],
    pub query_weights: &'a [f32],
    pub weight: f32,
}

/// [`fit_query_table`] with the documents' full-encoder vectors given (one per document, in
/// order, L2-normalised), so they are not encoded again.
#[allow(clippy::too_many_arguments)]
pub fn fit_query_table_with_doc_vectors(
    docs: &[&str],
    doc_vectors: Option<&[Vec<f32>]>,
    tokenizer: &Tokenizer,
    encoder: &dyn SpanEncoder,
    init_rows: &[f32],
    dims: usize,
    options: &FitOptions,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<FittedTable, FitError> {
    fit_query_table_guided(docs, doc_vectors, tokenizer, encoder, init_rows, dims, options, None, progress)
}

/// [`fit_query_table_with_doc_vectors`] whose refinement sees the sparse side ([`SparseGuide`]).
/// With `question_spans_per_doc` the fit runs twice over the same inputs and encodings: first
/// with the question spans among the training spans, whose rows of the question words — the
/// tokens of [`QUESTION_OPENERS`] and "?" — it keeps; then without them, for every other row, so
/// that no other row moves.
#[allow(clippy::too_many_arguments)]
pub fn fit_query_table_guided(
    docs: &[&str],
    doc_vectors: Option<&[Vec<f32>]>,
    tokenizer: &Tokenizer,
    encoder: &dyn SpanEncoder,
    init_rows: &[f32],
    dims: usize,
    options: &FitOptions,
    guide: Option<&SparseGuide>,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<FittedTable, FitError> {
    let started = Instant::now();
    let inputs = FitInputs::check(docs, doc_vectors, tokenizer, init_rows, dims, options, guide, progress)?;
    if options.question_spans_per_doc == 0 {
        return fit_pass(&inputs, encoder, progress, Questions::Unasked, started);
    }
    let remembered = Remembered { encoder, seen: std::sync::Mutex::new(HashMap::new()) };
    let mut labelled = |stage: &str, f: f64| progress(&format!("with questions: {stage}"), f);
    let asked = fit_pass(&inputs, &remembered, &mut labelled, Questions::Trained, Instant::now())?;
    // Only the question words' rows are kept: the rest of that table goes before the second fit.
    let asked = AskedRows::of(asked, question_word_ids(tokenizer)?, dims);
    fit_pass(&inputs, &remembered, progress, Questions::RowsOf(asked), started)
}

/// Remembers every encoding for the second pass of a fit with questions, which asks for the
/// same spans (and documents) again.
struct Remembered<'a> {
    encoder: &'a dyn SpanEncoder,
    seen: std::sync::Mutex<HashMap<String, Vec<f32>>>,
}

impl SpanEncoder for Remembered<'_> {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing: Vec<&str> = texts.iter().copied().filter(|t| !seen.contains_key(*t)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let vectors = self.encoder.encode(&missing)?;
            if vectors.len() != missing.len() {
                return Err(format!("{} vectors for {} texts", vectors.len(), missing.len()));
            }
            seen.extend(missing.iter().map(|t| t.to_string()).zip(vectors));
        }
        Ok(texts.iter().map(|t| seen[*t].clone()).collect())
    }
}

/// What both runs of a fit with questions share, checked and read once: the documents as the
/// fit reads them ([`bounded_documents`]) and their document frequencies.
struct FitInputs<'a> {
    docs: Vec<&'a str>,
    doc_vectors: Option<&'a [Vec<f32>]>,
    tokenizer: &'a Tokenizer,
    init_rows: &'a [f32],
    dims: usize,
    vocab: usize,
    options: &'a FitOptions,
    guide: Option<&'a SparseGuide<'a>>,
    df: Vec<u32>,
}

impl<'a> FitInputs<'a> {
    #[allow(clippy::too_many_arguments)]
    fn check(
        docs: &[&'a str],
        doc_vectors: Option<&'a [Vec<f32>]>,
        tokenizer: &'a Tokenizer,
        init_rows: &'a [f32],
        dims: usize,
        options: &'a FitOptions,
        guide: Option<&'a SparseGuide<'a>>,
        progress: &mut dyn FnMut(&str, f64),
    ) -> Result<FitInputs<'a>, FitError> {
        options.validate()?;
        let d = dims;
        if d == 0 || init_rows.is_empty() || init_rows.len() % d != 0 {
            return Err(FitError::InvalidInput(format!(
                "the untrained table has {} values, not a whole number of {d}-wide rows",
                init_rows.len()
            )));
        }
        let vocab = init_rows.len() / d;
        if let Some(i) = init_rows.iter().position(|v| !v.is_finite()) {
            return Err(FitError::InvalidInput(format!("untrained row {} has a NaN or infinite value", i / d)));
        }
        if docs.is_empty() {
            return Err(FitError::EmptyCorpus);
        }
        let docs = bounded_documents(docs, tokenizer)?;
        if guide.is_some() && options.refine_cloze_per_doc > 0 {
            return Err(FitError::InvalidOption("a sparse guide and inverse-cloze refinement pairs do not combine".into()));
        }
        if let Some(g) = guide {
            if g.doc_vectors.len() != docs.len() || g.query_weights.len() != vocab || !g.weight.is_finite() {
                return Err(FitError::InvalidInput(format!(
                    "the sparse guide has {} document vectors for {} documents and {} query weights for {} table rows",
                    g.doc_vectors.len(),
                    docs.len(),
                    g.query_weights.len(),
                    vocab
                )));
            }
        }
        if let Some(dv) = doc_vectors {
            if dv.len() != docs.len() || dv.iter().any(|v| v.len() != d) {
                return Err(FitError::InvalidInput(format!(
                    "{} document vectors given for {} documents of {d} dimensions",
                    dv.len(),
                    docs.len()
                )));
            }
        }
        // 1. Document frequencies (→ idf weights in each run).
        let df = document_frequencies(&docs, tokenizer, vocab, progress)?;
        Ok(FitInputs { docs, doc_vectors, tokenizer, init_rows, dims, vocab, options, guide, df })
    }
}

/// One run of [`fit_query_table_guided`], doing with question spans what `questions` says.
fn fit_pass(
    inputs: &FitInputs,
    encoder: &dyn SpanEncoder,
    progress: &mut dyn FnMut(&str, f64),
    questions: Questions,
    started: Instant,
) -> Result<FittedTable, FitError> {
    let FitInputs { doc_vectors, tokenizer, init_rows, dims: d, vocab, options, guide, .. } = *inputs;
    let docs: &[&str] = &inputs.docs;
    let df = &inputs.df;
    let ids_of = |text: &str| -> Result<Vec<u32>, FitError> {
        let mut ids = lr_tokenizer::plain_ids(tokenizer, text).map_err(FitError::Tokenizer)?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(FitError::InvalidInput(format!(
                "token id {bad} is outside the table's {vocab} rows (wrong tokenizer?)"
            )));
        }
        ids.truncate(MAX_QUERY_TOKENS);
        Ok(ids)
    };

    // 1. idf weights from the document frequencies.
    let weights: Option<Vec<f32>> = match options.weighting {
        Weighting::None => None,
        Weighting::Idf => Some(idf_of(df, docs.len(), options.idf_power)),
    };
    let fit_weights = if options.fit_weighted { weights.as_deref() } else { None };

    // 2. Split documents, cut spans.
    let mut rng = Rng::new(options.seed);
    let mut order: Vec<usize> = (0..docs.len()).filter(|&i| docs[i].split_whitespace().next().is_some()).collect();
    rng.shuffle(&mut order);
    let mut held = ((order.len() as f64) * options.held_out_fraction).floor() as usize;
    if held >= order.len() {
        held = order.len().saturating_sub(1);
    }
    // The first of a random order: a random sample.
    held = held.min(options.max_held_out_docs);
    let (held_docs, train_docs) = order.split_at(held);
    let mut train_docs = train_docs.to_vec();
    // Question spans count: both fits subsample alike, and the first encodes at most max_spans.
    let cap = (options.max_spans / (options.spans_per_doc + options.question_spans_per_doc)).max(1);
    if train_docs.len() > cap {
        train_docs.truncate(cap);
    }
    train_docs.sort_unstable();
    let mut held_docs = held_docs.to_vec();
    held_docs.sort_unstable();
    let mut rng = Rng::new(options.seed ^ 0x7472_6169_6e);
    let mut raw_train = Vec::new();
    for &i in &train_docs {
        sample_spans(i, docs[i], options.spans_per_doc, options.min_words, options.max_words, &mut rng, &mut raw_train);
    }
    if matches!(questions, Questions::Trained) {
        // Their own stream, so that the plain spans are the same with or without questions.
        let mut rng = Rng::new(options.seed ^ 0x6173_6b65_64);
        sample_questions(docs, &train_docs, options.question_spans_per_doc, options.min_words, options.max_words, &mut rng, &mut raw_train);
    }
    // Held-out pseudo-queries draw from their own stream: the same questions whatever the
    // training span settings.
    let mut rng = Rng::new(options.seed ^ 0x6865_6c64);
    let mut raw_held = Vec::new();
    for &i in &held_docs {
        sample_spans(
            i,
            docs[i],
            options.held_out_spans_per_doc,
            options.held_out_min_words,
            options.held_out_max_words,
            &mut rng,
            &mut raw_held,
        );
    }
    let tokenize = |raw: Vec<(usize, String)>| -> Result<Vec<Span>, FitError> {
        let mut out = Vec::with_capacity(raw.len());
        for (doc, text) in raw {
            let ids = ids_of(&text)?;
            if !ids.is_empty() {
                out.push(Span { doc, text, counts: lr_tokenizer::counts_of(&ids) });
            }
        }
        Ok(out)
    };
    let train = tokenize(raw_train)?;
    let held_spans = tokenize(raw_held)?;
    if train.is_empty() {
        return Err(FitError::NoTokens);
    }

    // 3. Full-encoder targets (spans sorted by length so batches carry little padding).
    let t_enc = Instant::now();
    let all_texts: Vec<&str> = train.iter().chain(&held_spans).map(|s| s.text.as_str()).collect();
    let targets_all = encode_all(encoder, &all_texts, d, options.encode_batch, "encoding spans", progress)?;
    let seconds_encode_spans = t_enc.elapsed().as_secs_f64();
    let (train_y, held_y) = targets_all.split_at(train.len() * d);

    // 4. Document vectors when something needs them.
    // Agreement is measured over the documents when their vectors are given (or refinement
    // needs them anyway); otherwise over the training spans' full encodings, which are at hand:
    // encoding a whole corpus only to measure would cost more than the fit.
    let need_docs = options.refine != Refine::None;
    let t_docs = Instant::now();
    let doc_matrix: Option<Vec<f32>> = if let Some(dv) = doc_vectors {
        Some(dv.iter().flat_map(|v| v.iter().copied()).collect())
    } else if !need_docs {
        None
    } else {
        Some(encode_all(encoder, docs, d, options.encode_batch, "encoding documents", progress)?)
    };
    let seconds_encode_docs = if doc_vectors.is_some() { 0.0 } else { t_docs.elapsed().as_secs_f64() };
    let doc_tensor = match &doc_matrix {
        Some(m) => Some(
            Tensor::from_slice(m, (docs.len(), d), &Device::Cpu)
                .map_err(|e| FitError::Encoder(format!("document matrix: {e}")))?,
        ),
        None => None,
    };

    // 5. Fitted tokens, design matrix, prior, centring.
    let mut local: HashMap<u32, u32> = HashMap::new();
    let mut fitted_ids: Vec<u32> = Vec::new();
    for s in &train {
        for &(id, _) in &s.counts {
            local.entry(id).or_insert_with(|| {
                fitted_ids.push(id);
                (fitted_ids.len() - 1) as u32
            });
        }
    }
    let t = fitted_ids.len();
    let a = design(&train, fit_weights, &local);
    let mut y_fit = train_y.to_vec();
    let mut held_y_fit = held_y.to_vec();
    let mut prior_full: Vec<f32> = init_rows.to_vec();
    if options.center {
        let mut mean_y = vec![0.0f64; d];
        train_y.chunks_exact(d).for_each(|r| r.iter().zip(&mut mean_y).for_each(|(v, m)| *m += *v as f64));
        mean_y.iter_mut().for_each(|m| *m /= train.len() as f64);
        for y in [&mut y_fit, &mut held_y_fit] {
            y.chunks_exact_mut(d).for_each(|r| r.iter_mut().zip(&mean_y).for_each(|(v, m)| *v -= *m as f32));
        }
        let mut mean_r = vec![0.0f64; d];
        init_rows.chunks_exact(d).for_each(|r| r.iter().zip(&mut mean_r).for_each(|(v, m)| *m += *v as f64));
        mean_r.iter_mut().for_each(|m| *m /= vocab as f64);
        prior_full
            .chunks_exact_mut(d)
            .for_each(|r| r.iter_mut().zip(&mean_r).for_each(|(v, m)| *v -= *m as f32));
    }
    if options.prior == Prior::Linear {
        progress("fitting the linear prior", 0.0);
        prior_full = linear_prior(&a, &fitted_ids, &prior_full, &y_fit, d, progress)?;
    }
    let prior_fit: Vec<f32> =
        fitted_ids.iter().flat_map(|&id| prior_full[id as usize * d..(id as usize + 1) * d].iter().copied()).collect();

    // 6. Ridge solve.
    let t_solve = Instant::now();
    let max_it = options.max_iterations;
    let (x, stats) = solve::ridge_cg(&a, &y_fit, &prior_fit, t, d, options.lambda, max_it, options.tolerance, &mut |it, _| {
        progress("solving", it as f64 / max_it.max(1) as f64)
    });
    let seconds_solve = t_solve.elapsed().as_secs_f64();
    let (data_before, _) = solve::ridge_terms(&a, &y_fit, &prior_fit.iter().map(|&v| v as f64).collect::<Vec<_>>(), &prior_fit, d);
    let (data_after, reg_after) = solve::ridge_terms(&a, &y_fit, &x, &prior_fit, d);
    let mut rows = prior_full.clone();
    for (k, &id) in fitted_ids.iter().enumerate() {
        for j in 0..d {
            rows[id as usize * d + j] = x[k * d + j] as f32;
        }
    }

    // 7. Held-out references (full-encoder top-k) and the "before" measures.
    let k = options.agreement_k;
    let held_sources: Vec<usize> = held_spans.iter().map(|s| s.doc).collect();
    let agree_corpus: Option<(Tensor, &'static str)> = match (&doc_tensor, k > 0 && !held_spans.is_empty()) {
        (_, false) => None,
        (Some(dt), true) => Some((dt.clone(), "documents")),
        (None, true) => Some((
            Tensor::from_slice(train_y, (train.len(), d), &Device::Cpu)
                .map_err(|e| FitError::Encoder(format!("span matrix: {e}")))?,
            "training spans",
        )),
    };
    let by_docs = matches!(agree_corpus, Some((_, "documents")));
    let full_top: Option<Vec<Vec<usize>>> = match &agree_corpus {
        Some((dt, _)) => Some(top_k_rows(held_y, held_spans.len(), dt, d, k)?),
        None => None,
    };
    let agree_tensor = agree_corpus.as_ref().map(|(t, _)| t);
    let lookup_vectors = |rows: &[f32], w: Option<&[f32]>| -> Vec<f32> {
        let mut out = vec![0.0f32; held_spans.len() * d];
        for (s, o) in held_spans.iter().zip(out.chunks_exact_mut(d)) {
            weighted_mean(&s.counts, w, rows, d, o);
            normalize(o);
        }
        out
    };
    let cosine = |v: &[f32]| -> f64 {
        let n = held_spans.len().max(1) as f64;
        v.chunks_exact(d).zip(held_y.chunks_exact(d)).map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>()).sum::<f64>() / n
    };
    let before_vectors = lookup_vectors(init_rows, None);
    let mut agreement_before = None;
    let (mut source_full, mut source_before, mut mrr_full, mut mrr_before) = (None, None, None, None);
    if let (Some(ft), Some(dt)) = (&full_top, agree_tensor) {
        let ag = agreement(&before_vectors, ft, &held_sources, dt, d, k)?;
        agreement_before = Some(ag.overlap);
        if by_docs {
            source_before = Some(ag.source_lookup);
            source_full = Some(ag.source_full);
            mrr_before = Some(ag.source_mrr_lookup);
            mrr_full = Some(ag.source_mrr_full);
        }
    }

    // 8. Optional refinement.
    let t_refine = Instant::now();
    let mut refine_loss = Vec::new();
    let mut refine_agreement = Vec::new();
    let mut refine_source_mrr = Vec::new();
    let (mut refined_tokens, mut refine_pairs) = (0usize, 0usize);
    let mut refine_best_epoch = None;
    if options.refine != Refine::None && options.refine_epochs > 0 {
        let dt = doc_tensor.as_ref().expect("refinement encodes the documents");
        let query_weights = weights.as_deref();
        // Refinement needs no full-encoder targets (InfoNCE only needs the source document), so
        // it can use many more spans than the ridge fit: extra spans of the training documents,
        // encoded by nobody. Their new tokens join the trained rows, starting from the prior.
        let mut spans: Vec<&Span> = train.iter().collect();
        let extra: Vec<Span> = if options.refine == Refine::Infonce
            && options.refine_spans_per_doc + options.refine_question_spans_per_doc > 0
        {
            let mut rng = Rng::new(options.seed ^ 0x6578_7472_61);
            let mut raw = Vec::new();
            let (lo, hi) = (options.refine_min_words, options.refine_max_words);
            for &i in &train_docs {
                sample_spans(i, docs[i], options.refine_spans_per_doc, lo, hi, &mut rng, &mut raw);
            }
            // Their own stream, so that the plain spans are the same with or without questions.
            let mut rng = Rng::new(options.seed ^ 0x7175_6573_74);
            sample_questions(docs, &train_docs, options.refine_question_spans_per_doc, lo, hi, &mut rng, &mut raw);
            tokenize(raw)?
        } else {
            Vec::new()
        };
        spans.extend(extra.iter());
        // Inverse-cloze pairs: their positives are the rests' full encodings, appended to the
        // document matrix (a span's `doc` indexes that matrix).
        let mut positives = dt.clone();
        let cloze: Vec<Span> = if options.refine_cloze_per_doc > 0 {
            let pairs = cloze_pairs(
                docs,
                &train_docs,
                options.refine_cloze_per_doc,
                options.refine_cloze_min_words,
                options.refine_cloze_max_words,
                options.seed ^ 0x636c_6f7a_65,
            );
            let rests: Vec<&str> = pairs.iter().map(|p| p.rest.as_str()).collect();
            let rest_vectors = encode_all(encoder, &rests, d, options.encode_batch, "encoding cloze rests", progress)?;
            let rest_tensor = Tensor::from_slice(&rest_vectors, (pairs.len(), d), &Device::Cpu)
                .map_err(|e| FitError::Encoder(format!("cloze rests: {e}")))?;
            positives = Tensor::cat(&[dt, &rest_tensor], 0).map_err(|e| FitError::Encoder(format!("cloze rests: {e}")))?;
            tokenize(pairs.into_iter().enumerate().map(|(k, p)| (docs.len() + k, p.query)).collect())?
        } else {
            Vec::new()
        };
        spans.extend(cloze.iter());
        let mut r_local = local.clone();
        let mut r_ids = fitted_ids.clone();
        for s in extra.iter().chain(&cloze) {
            for &(id, _) in &s.counts {
                r_local.entry(id).or_insert_with(|| {
                    r_ids.push(id);
                    (r_ids.len() - 1) as u32
                });
            }
        }
        // Refinement trains the vectors the lookup will compute: the query-time weights.
        let a_query = design(spans.iter().copied(), query_weights, &r_local);
        let sources: Vec<usize> = spans.iter().map(|s| s.doc).collect();
        let mut params: Vec<f32> =
            r_ids.iter().flat_map(|&id| rows[id as usize * d..(id as usize + 1) * d].iter().copied()).collect();
        let anchor = params.clone();
        let mut epoch_rng = Rng::new(options.seed ^ 0x7265_6669_6e65);
        let mut refiner = refine::Refiner::new(params.len(), r_ids.len());
        // The sparse side's raw score of each refinement span for a document, when guided.
        let sparse_docs: Vec<HashMap<u32, f32>> =
            guide.map(|g| g.doc_vectors.iter().map(|v| v.iter().copied().collect()).collect()).unwrap_or_default();
        let sparse_queries: Vec<Vec<(u32, f32)>> = guide
            .map(|g| spans.iter().map(|s| s.counts.iter().map(|&(t, c)| (t, c * g.query_weights[t as usize])).collect()).collect())
            .unwrap_or_default();
        let sparse_score = |span: usize, doc: usize| -> f32 {
            sparse_queries[span].iter().map(|(t, w)| w * sparse_docs[doc].get(t).copied().unwrap_or(0.0)).sum()
        };
        let bias: Option<(&dyn Fn(usize, usize) -> f32, f32)> = guide.map(|g| (&sparse_score as &dyn Fn(usize, usize) -> f32, g.weight));
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        refined_tokens = r_ids.len();
        refine_pairs = spans.len();
        for epoch in 0..options.refine_epochs {
            let loss =
                refiner.epoch(&a_query, &mut params, &anchor, train_y, &sources, &positives, d, options, bias, &mut epoch_rng)?;
            refine_loss.push(loss);
            if let (Some(ft), Some(at)) = (&full_top, agree_tensor) {
                let mut r = rows.clone();
                for (k2, &id) in r_ids.iter().enumerate() {
                    r[id as usize * d..(id as usize + 1) * d].copy_from_slice(&params[k2 * d..(k2 + 1) * d]);
                }
                // Judged before the map: with it, the criterion moves to a later epoch within its
                // noise, which titles (the pseudo-queries that agree with judgements) rate lower
                // (docs/quality.md, "Unseen rows").
                let ag = agreement(&lookup_vectors(&r, query_weights), ft, &held_sources, at, d, k)?;
                refine_agreement.push(ag.overlap);
                if by_docs {
                    refine_source_mrr.push(ag.source_mrr_lookup);
                }
                // Early stopping on the held-out split: known-item MRR over the documents, else
                // agreement over the training spans.
                let score = if by_docs { ag.source_mrr_lookup } else { ag.overlap };
                if options.refine_early_stop && best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                    best = Some((score, epoch + 1, params.clone()));
                }
            }
            progress("refining", (epoch + 1) as f64 / options.refine_epochs as f64);
        }
        if let Some((_, epoch, kept)) = best {
            refine_best_epoch = Some(epoch);
            params = kept;
        }
        for (k2, &id) in r_ids.iter().enumerate() {
            rows[id as usize * d..(id as usize + 1) * d].copy_from_slice(&params[k2 * d..(k2 + 1) * d]);
        }
    }
    let seconds_refine = t_refine.elapsed().as_secs_f64();
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        return Err(FitError::InvalidInput(format!("the fit diverged: row {} is not finite (lower refine_lr)", i / d)));
    }
    // Every row the ridge fit did not determine (tokens only in refinement spans, in held-out
    // documents or in no document) from the map fitted on those it did.
    let unmapped_rows = (options.map_unseen_rows && options.keep_unmapped_rows).then(|| rows.clone());
    let tokens_mapped = if options.map_unseen_rows {
        progress("mapping unseen rows", 0.0);
        let mut ridge_fitted = vec![false; vocab];
        fitted_ids.iter().for_each(|&id| ridge_fitted[id as usize] = true);
        map_unseen_rows_with_progress(&prior_full, &mut rows, &ridge_fitted, d, progress)?
    } else {
        0
    };
    let mut unmapped_rows = unmapped_rows;
    let (mut pairs_question, mut question_rows) = (0, 0);
    let mut seconds = [seconds_encode_spans, seconds_encode_docs, seconds_solve, seconds_refine];
    if let Questions::RowsOf(asked) = &questions {
        for (k, &id) in asked.ids.iter().enumerate() {
            let row = id as usize * d..(id as usize + 1) * d;
            rows[row.clone()].copy_from_slice(&asked.rows[k * d..(k + 1) * d]);
            if let (Some(u), Some(au)) = (unmapped_rows.as_mut(), asked.unmapped.as_ref()) {
                u[row].copy_from_slice(&au[k * d..(k + 1) * d]);
            }
        }
        pairs_question = asked.pairs_train - train.len();
        question_rows = asked.ids.len();
        // The first fit did the encoding (this one read it back) and fitted too.
        seconds.iter_mut().zip(asked.seconds).for_each(|(s, a)| *s += a);
    }
    let [seconds_encode_spans, seconds_encode_docs, seconds_solve, seconds_refine] = seconds;

    // 9. "After" measures.
    let after_vectors = lookup_vectors(&rows, weights.as_deref());
    let (mut agreement_after, mut source_after, mut mrr_after) = (None, None, None);
    if let (Some(ft), Some(dt)) = (&full_top, agree_tensor) {
        let ag = agreement(&after_vectors, ft, &held_sources, dt, d, k)?;
        agreement_after = Some(ag.overlap);
        if by_docs {
            source_after = Some(ag.source_lookup);
            mrr_after = Some(ag.source_mrr_lookup);
        }
    }
    let held_mse = |rows: &[f32]| -> Option<f64> {
        if held_spans.is_empty() {
            return None;
        }
        let mut o = vec![0.0f32; d];
        let mut total = 0.0;
        for (s, y) in held_spans.iter().zip(held_y_fit.chunks_exact(d)) {
            weighted_mean(&s.counts, fit_weights, rows, d, &mut o);
            total += o.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
        }
        Some(total / held_spans.len() as f64)
    };
    let has_held = !held_spans.is_empty();
    let report = FitReport {
        docs: docs.len(),
        docs_train: train_docs.len(),
        docs_held_out: held_docs.len(),
        pairs_train: train.len(),
        pairs_held_out: held_spans.len(),
        vocab,
        dims: d,
        tokens_fitted: t,
        tokens_mapped,
        pairs_question,
        question_rows,
        solver_iterations: stats.iterations,
        solver_relative_residual: stats.relative_residual,
        objective_before: data_before,
        objective_after: data_after + options.lambda * reg_after,
        loss_train_before: data_before / train.len() as f64,
        loss_train_after: data_after / train.len() as f64,
        loss_held_out_before: held_mse(&prior_full),
        loss_held_out_after: held_mse(&rows),
        cosine_held_out_before: has_held.then(|| cosine(&before_vectors)),
        cosine_held_out_after: has_held.then(|| cosine(&after_vectors)),
        agreement_k: k,
        agreement_corpus: agree_corpus.as_ref().map(|(_, c)| c.to_string()),
        agreement_before,
        agreement_after,
        source_top_k_full: source_full,
        source_top_k_before: source_before,
        source_top_k_after: source_after,
        source_mrr_full: mrr_full,
        source_mrr_before: mrr_before,
        source_mrr_after: mrr_after,
        refine_epochs: refine_loss.len(),
        refine_pairs,
        refine_tokens: refined_tokens,
        refine_best_epoch,
        refine_loss,
        refine_agreement,
        refine_source_mrr,
        seconds_encode_spans,
        seconds_encode_docs,
        seconds_solve,
        seconds_refine,
        seconds_total: started.elapsed().as_secs_f64(),
        options: options.clone(),
    };
    progress("done", 1.0);
    let held_out_queries = held_spans.into_iter().map(|s| (s.doc, s.text)).collect();
    Ok(FittedTable { rows, weights, report, held_out_queries, fitted_ids, unmapped_rows })
}

/// Encodes `texts` in length-sorted batches; returns the vectors flat (n × d), L2-normalised.
fn encode_all(
    encoder: &dyn SpanEncoder,
    texts: &[&str],
    d: usize,
    batch: usize,
    stage: &str,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<Vec<f32>, FitError> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![0.0f32; texts.len() * d];
    let mut done = 0usize;
    progress(stage, 0.0);
    for chunk in order.chunks(batch) {
        let group: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let vectors = encoder.encode(&group).map_err(FitError::Encoder)?;
        if vectors.len() != group.len() {
            return Err(FitError::Encoder(format!("{} vectors returned for {} texts", vectors.len(), group.len())));
        }
        for (&i, mut v) in chunk.iter().zip(vectors) {
            if v.len() != d {
                return Err(FitError::Encoder(format!("a {}-dimensional vector for a {d}-dimensional table", v.len())));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(FitError::Encoder("a vector with NaN or infinite values".into()));
            }
            normalize(&mut v);
            out[i * d..(i + 1) * d].copy_from_slice(&v);
        }
        done += chunk.len();
        progress(stage, done as f64 / texts.len() as f64);
    }
    Ok(out)
}

/// An inverse-cloze pseudo-query (Lee et al., 2019): a span of `doc` as the query, and the
/// document with that span cut out as the only relevant text. Unlike a verbatim span, the query's
/// words are not guaranteed to be in its target, so lexical and semantic matching are judged on
/// more equal terms (docs/quality.md).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClozePair {
    pub doc: usize,
    pub query: String,
    pub rest: String,
}

/// `per_doc` inverse-cloze pairs for each of `docs` (by index into `texts`): contiguous spans of
/// `min_words..=max_words` whitespace words, from documents at least twice `max_words` long so
/// that the rest still says something. Deterministic given `seed`.
pub fn cloze_pairs(texts: &[&str], docs: &[usize], per_doc: usize, min_words: usize, max_words: usize, seed: u64) -> Vec<ClozePair> {
    let mut rng = Rng::new(seed ^ 0x00c1_07e0);
    let mut out = Vec::new();
    for &doc in docs {
        let words: Vec<&str> = texts[doc].split_whitespace().collect();
        if words.len() < 2 * max_words || min_words == 0 || min_words > max_words {
            continue;
        }
        for _ in 0..per_doc {
            let len = rng.between(min_words, max_words);
            let start = rng.below(words.len() - len + 1);
            let rest: Vec<&str> = words[..start].iter().chain(&words[start + len..]).copied().collect();
            out.push(ClozePair { doc, query: words[start..start + len].join(" "), rest: rest.join(" ") });
        }
    }
    out
}

#[cfg(test)]
mod scoring_tests {
    use super::*;

    /// Scoring in blocks of queries gives each query the top k it gets when all are scored at once.
    #[test]
    fn blocks_of_queries_keep_each_querys_top_k() {
        let (n, m, d, k) = (37, 53, 8, 5);
        let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5;
        let q: Vec<f32> = (0..n * d).map(value).collect();
        let docs_data: Vec<f32> = (0..m * d).map(|i| value(i + 31)).collect();
        let docs = Tensor::from_slice(&docs_data, (m, d), &Device::Cpu).unwrap();
        let whole = top_k_rows_within(&q, n, &docs, d, k, usize::MAX).unwrap();
        assert_eq!(whole.len(), n);
        for elements in [1, m, 3 * m + 1, 10 * m] {
            assert_eq!(top_k_rows_within(&q, n, &docs, d, k, elements).unwrap(), whole, "{elements} scores at a time");
        }
        // Each query's list is its k best by the plain inner product.
        for (i, top) in whole.iter().enumerate() {
            let scores: Vec<f32> = (0..m).map(|j| (0..d).map(|t| q[i * d + t] * docs_data[j * d + t]).sum()).collect();
            let want: Vec<usize> = top_k(&scores, k);
            assert_eq!(top.iter().map(|&j| scores[j]).collect::<Vec<_>>().len(), k);
            assert!((scores[top[0]] - scores[want[0]]).abs() < 1e-5, "query {i}");
        }
    }
}
