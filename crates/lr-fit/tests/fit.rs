use lr_fit::solve::{ridge_cg, ridge_terms, Design};
use lr_fit::{fit_query_table, FitError, FitOptions, Refine, SpanEncoder, Weighting};

fn tmpdir(name: &str) -> std::path::PathBuf {
    // Tests run in parallel: every call gets its own directory.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("lr-fit-test-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random numbers in [-1, 1) from a key.
fn hash_vec(key: &str, d: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (0..d)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

const D: usize = 8;
const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
    "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon",
];

/// A word-level tokenizer over WORDS ([UNK] = 0, word i = i + 1).
fn tokenizer(dir: &std::path::Path) -> lr_tokenizer::Tokenizer {
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert(w.to_string(), (i + 1).into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, json.to_string()).unwrap();
    lr_tokenizer::load_tokenizer(&p, None).unwrap()
}

/// A stand-in for the full model: a common component plus word vectors, with a word-order term
/// (bigrams) that no row mean can express exactly.
struct FakeEncoder;
impl SpanEncoder for FakeEncoder {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts
            .iter()
            .map(|t| {
                let words: Vec<&str> = t.split_whitespace().collect();
                let mut v = hash_vec("common", D).iter().map(|x| x * 0.5).collect::<Vec<_>>();
                for w in &words {
                    for (a, b) in v.iter_mut().zip(hash_vec(&format!("w:{w}"), D)) {
                        *a += b;
                    }
                }
                for p in words.windows(2) {
                    for (a, b) in v.iter_mut().zip(hash_vec(&format!("{}{}", p[0], p[1]), D)) {
                        *a += 0.3 * b;
                    }
                }
                normalized(v)
            })
            .collect())
    }
}

/// Untrained rows: dominated by a shared direction, like `[CLS] id [SEP]` rows.
fn init_rows() -> Vec<f32> {
    let mut rows = Vec::new();
    for i in 0..=WORDS.len() {
        let own = hash_vec(&format!("init:{i}"), D);
        let common = hash_vec("shared", D);
        rows.extend(normalized(own.iter().zip(&common).map(|(a, b)| 0.3 * a + b).collect()));
    }
    rows
}

fn corpus() -> Vec<String> {
    let mut state = 7u64;
    (0..60)
        .map(|_| {
            let n = 10 + (state % 20) as usize;
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    WORDS[((state >> 33) % WORDS.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn small_options() -> FitOptions {
    // The ridge fit alone (the default adds refinement, tested separately).
    FitOptions {
        tolerance: 1e-8,
        max_iterations: 2000,
        held_out_fraction: 0.2,
        agreement_k: 5,
        refine: Refine::None,
        // One pass: the question words' second fit is tested on its own.
        question_spans_per_doc: 0,
        ..Default::default()
    }
}

fn fit(options: &FitOptions) -> lr_fit::FittedTable {
    let d = tmpdir("fit");
    let tok = tokenizer(&d);
    let docs = corpus();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    fit_query_table(&docs, &tok, &FakeEncoder, &init_rows(), D, options, &mut |_, _| {}).unwrap()
}

/// Dense Cholesky solve, for the closed form.
fn solve_dense(m: &mut [f64], n: usize, b: &mut [f64], cols: usize) {
    for k in 0..n {
        let p = m[k * n + k].sqrt();
        m[k * n + k] = p;
        for i in k + 1..n {
            m[i * n + k] /= p;
        }
        for j in k + 1..n {
            for i in j..n {
                m[i * n + j] -= m[i * n + k] * m[j * n + k];
            }
        }
    }
    for c in 0..cols {
        let mut x: Vec<f64> = (0..n).map(|i| b[i * cols + c]).collect();
        for i in 0..n {
            for k in 0..i {
                x[i] -= m[i * n + k] * x[k];
            }
            x[i] /= m[i * n + i];
        }
        for i in (0..n).rev() {
            for k in i + 1..n {
                x[i] -= m[k * n + i] * x[k];
            }
            x[i] /= m[i * n + i];
        }
        (0..n).for_each(|i| b[i * cols + c] = x[i]);
    }
}

#[test]
fn conjugate_gradients_reach_the_closed_form_ridge_solution() {
    let (s, t, d, lambda) = (40usize, 12usize, 5usize, 0.03);
    let mut a = Design::new();
    let mut dense = vec![0.0f64; s * t];
    for si in 0..s {
        let h = hash_vec(&format!("row{si}"), t);
        let mut entries: Vec<(u32, f32)> =
            h.iter().enumerate().filter(|(_, v)| **v > 0.3).map(|(j, v)| (j as u32, *v)).collect();
        if entries.is_empty() {
            entries.push((si as u32 % t as u32, 1.0));
        }
        let total: f32 = entries.iter().map(|e| e.1).sum();
        entries.iter_mut().for_each(|e| e.1 /= total);
        for &(j, v) in &entries {
            dense[si * t + j as usize] = v as f64;
        }
        a.push_row(&entries);
    }
    let y: Vec<f32> = (0..s).flat_map(|si| hash_vec(&format!("y{si}"), d)).collect();
    let prior: Vec<f32> = (0..t).flat_map(|ti| hash_vec(&format!("p{ti}"), d)).collect();
    let (x, stats) = ridge_cg(&a, &y, &prior, t, d, lambda, 1000, 1e-12, &mut |_, _| {});
    assert!(stats.relative_residual <= 1e-12, "{stats:?}");
    // Closed form: (AᵀA + λI) X = AᵀY + λP.
    let mut m = vec![0.0f64; t * t];
    let mut b = vec![0.0f64; t * d];
    for i in 0..t {
        for j in 0..t {
            m[i * t + j] = (0..s).map(|si| dense[si * t + i] * dense[si * t + j]).sum::<f64>();
        }
        m[i * t + i] += lambda;
        for c in 0..d {
            b[i * d + c] = (0..s).map(|si| dense[si * t + i] * y[si * d + c] as f64).sum::<f64>()
                + lambda * prior[i * d + c] as f64;
        }
    }
    solve_dense(&mut m, t, &mut b, d);
    let max_diff = x.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-8, "CG differs from the closed form by {max_diff}");
    // And it lowers the objective from the prior.
    let p64: Vec<f64> = prior.iter().map(|&v| v as f64).collect();
    let (before, _) = ridge_terms(&a, &y, &p64, &prior, d);
    let (data, reg) = ridge_terms(&a, &y, &x, &prior, d);
    assert!(data + lambda * reg < before);
}

#[test]
fn the_fit_reduces_its_own_loss_and_brings_lookup_closer() {
    let f = fit(&small_options());
    let r = &f.report;
    assert!(r.pairs_train > 0 && r.pairs_held_out > 0 && r.tokens_fitted == WORDS.len(), "{r:?}");
    assert!(r.objective_after < r.objective_before, "{r:?}");
    assert!(r.loss_train_after < 0.5 * r.loss_train_before, "{r:?}");
    assert!(r.loss_held_out_after.unwrap() < r.loss_held_out_before.unwrap(), "{r:?}");
    assert!(r.cosine_held_out_after.unwrap() > r.cosine_held_out_before.unwrap() + 0.05, "{r:?}");
    assert!(r.agreement_after.unwrap() >= r.agreement_before.unwrap(), "{r:?}");
    assert!(r.solver_relative_residual <= 1e-8);
    assert_eq!(r.agreement_corpus.as_deref(), Some("training spans"), "no document vectors given");
    // Idf weights for every row.
    let w = f.weights.as_ref().unwrap();
    assert_eq!(w.len(), WORDS.len() + 1);
    assert!(w.iter().all(|v| v.is_finite() && *v > 0.0));
    // [UNK] (never in a document) is mapped into the fitted space: its untrained row times the
    // ridge least-squares map from the trained rows' untrained values to their fitted values,
    // solved here in closed form.
    assert_eq!(r.tokens_mapped, 1);
    assert_eq!(f.fitted_ids.len(), WORDS.len());
    let init = init_rows();
    assert_mapped_from(&f, &init);
    assert_ne!(&f.rows[..D], &init[..D]);
    // Without the map it keeps its untrained row, and nothing else changes.
    let kept_options = || FitOptions { map_unseen_rows: false, ..small_options() };
    let kept = fit(&kept_options());
    assert_eq!(kept.report.tokens_mapped, 0);
    assert_eq!(&kept.rows[..D], &init[..D]);
    assert_eq!(&kept.rows[D..], &f.rows[D..]);
    // One fit can return both: the mapped rows and, kept, the rows a fit without the map gives.
    assert_eq!(f.unmapped_rows, None);
    let both = fit(&FitOptions { keep_unmapped_rows: true, ..small_options() });
    assert_eq!(both.rows, f.rows);
    assert_eq!(both.unmapped_rows.as_ref(), Some(&kept.rows));
    assert_eq!(fit(&FitOptions { keep_unmapped_rows: true, ..kept_options() }).unmapped_rows, None, "nothing was mapped");
    assert!(FitOptions::from_json(&serde_json::json!({"keep_unmapped_rows": true})).is_err(), "not a user option");
    let json = serde_json::to_value(r).unwrap();
    assert!(json["options"]["lambda"].is_number());
}

#[test]
fn fitting_is_deterministic_given_the_seed() {
    let o = small_options();
    let a = fit(&o);
    let b = fit(&o);
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.weights, b.weights);
    assert_eq!(a.report.agreement_after, b.report.agreement_after);
    let c = fit(&FitOptions { seed: 7, ..o });
    assert_ne!(a.rows, c.rows, "another seed draws other spans");
}

#[test]
fn refinement_runs_deterministically_and_stays_finite() {
    for (refine, refine_in_batch) in [(Refine::Infonce, false), (Refine::Distill, false), (Refine::Infonce, true)] {
        let o = FitOptions {
            refine,
            refine_in_batch,
            refine_epochs: 3,
            refine_batch: 16,
            refine_lr: 1e-2,
            refine_early_stop: false,
            ..small_options()
        };
        let a = fit(&o);
        assert_eq!(a.report.refine_epochs, 3);
        assert_eq!(a.report.refine_loss.len(), 3);
        assert!(a.report.refine_loss[2] < a.report.refine_loss[0], "{:?}", a.report.refine_loss);
        assert!(a.rows.iter().all(|v| v.is_finite()));
        assert_eq!(a.rows, fit(&o).rows);
    }
}

#[test]
fn plain_weighting_and_variants_work() {
    let f = fit(&FitOptions {
        weighting: Weighting::None,
        center: true,
        prior: lr_fit::Prior::Linear,
        ..small_options()
    });
    assert!(f.weights.is_none());
    assert!(f.report.objective_after < f.report.objective_before);
    let f = fit(&FitOptions { fit_weighted: true, held_out_fraction: 0.0, ..small_options() });
    assert_eq!(f.report.pairs_held_out, 0);
    assert!(f.report.agreement_after.is_none() && f.report.cosine_held_out_after.is_none());
}

struct Failing;
impl SpanEncoder for Failing {
    fn encode(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Err("out of memory".into())
    }
}
struct WrongDims;
impl SpanEncoder for WrongDims {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts.iter().map(|_| vec![1.0; D + 1]).collect())
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tmpdir("errors");
    let tok = tokenizer(&dir);
    let o = small_options();
    let rows = init_rows();
    let run = |docs: &[&str], enc: &dyn SpanEncoder, rows: &[f32], o: &FitOptions| {
        fit_query_table(docs, &tok, enc, rows, D, o, &mut |_, _| {}).map(|_| ())
    };
    assert_eq!(run(&[], &FakeEncoder, &rows, &o), Err(FitError::EmptyCorpus));
    assert_eq!(run(&["", "   \n"], &FakeEncoder, &rows, &o), Err(FitError::NoTokens));
    assert!(matches!(run(&["alpha beta"], &FakeEncoder, &rows[..rows.len() - 1], &o), Err(FitError::InvalidInput(_))));
    // A table smaller than the tokenizer's vocabulary.
    assert!(matches!(run(&["upsilon"], &FakeEncoder, &rows[..D * 3], &o), Err(FitError::InvalidInput(_))));
    assert!(matches!(run(&["alpha beta"], &Failing, &rows, &o), Err(FitError::Encoder(m)) if m.contains("out of memory")));
    assert!(matches!(run(&["alpha beta"], &WrongDims, &rows, &o), Err(FitError::Encoder(_))));
    // One document is enough (nothing held out).
    run(&["alpha beta gamma delta"], &FakeEncoder, &rows, &o).unwrap();
    let bad = FitOptions { min_words: 5, max_words: 2, ..o.clone() };
    assert!(matches!(run(&["alpha"], &FakeEncoder, &rows, &bad), Err(FitError::InvalidOption(_))));
    assert!(matches!(
        FitOptions::from_json(&serde_json::json!({"lamda": 1})),
        Err(FitError::InvalidOption(m)) if m.contains("lamda")
    ));
    assert!(FitOptions::from_json(&serde_json::json!({"lambda": -1})).is_err());
    let o = FitOptions::from_json(&serde_json::json!({"lambda": 0.1, "refine": "distill"})).unwrap();
    assert_eq!((o.lambda, o.refine, o.spans_per_doc), (0.1, Refine::Distill, 8));
}

#[test]
fn document_vectors_given_measure_agreement_over_documents() {
    let d = tmpdir("docvec");
    let tok = tokenizer(&d);
    let docs = corpus();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let vectors = FakeEncoder.encode(&docs).unwrap();
    let o = small_options();
    let f = lr_fit::fit_query_table_with_doc_vectors(&docs, Some(&vectors), &tok, &FakeEncoder, &init_rows(), D, &o, &mut |_, _| {})
        .unwrap();
    let r = &f.report;
    assert_eq!(r.agreement_corpus.as_deref(), Some("documents"));
    assert!(r.source_top_k_full.is_some() && r.source_mrr_after.is_some(), "{r:?}");
    assert!(r.agreement_after.unwrap() > r.agreement_before.unwrap(), "{r:?}");
    assert_eq!(r.seconds_encode_docs, 0.0);
    // Vectors that do not match the documents are refused.
    let err = lr_fit::fit_query_table_with_doc_vectors(&docs, Some(&vectors[1..]), &tok, &FakeEncoder, &init_rows(), D, &o, &mut |_, _| {});
    assert!(matches!(err, Err(FitError::InvalidInput(_))));
}

/// Held-out documents are at most `max_held_out_docs` (their spans are scored against every
/// document: without a cap the measure grows with the corpus squared); the default leaves a
/// corpus of under 20,000 documents as it was.
#[test]
fn held_out_documents_are_capped() {
    assert_eq!(FitOptions::default().max_held_out_docs, 2000);
    assert_eq!(fit(&small_options()).report.docs_held_out, 12); // 20 % of 60
    let capped = fit(&FitOptions { max_held_out_docs: 5, ..small_options() });
    assert_eq!(capped.report.docs_held_out, 5);
    assert_eq!(capped.report.docs_train, 55, "the documents not held out train");
    assert!(capped.report.agreement_after.is_some());
    let err = FitOptions::from_json(&serde_json::json!({"max_held_out_docs": 0}));
    assert!(matches!(err, Err(FitError::InvalidOption(_))), "{err:?}");
}

#[test]
fn default_options_refine_on_extra_spans_and_keep_the_best_epoch() {
    let o = FitOptions { held_out_fraction: 0.2, agreement_k: 5, refine_batch: 32, ..Default::default() };
    assert_eq!((o.refine, o.refine_spans_per_doc, o.refine_early_stop), (Refine::Infonce, 32, true));
    let f = fit(&o);
    let r = &f.report;
    // No document vectors were given: refinement encoded the documents, agreement is over them.
    assert_eq!(r.agreement_corpus.as_deref(), Some("documents"));
    assert!(r.refine_pairs > r.pairs_train, "{r:?}");
    // And a second pass for the question words (all [UNK] here).
    assert!(r.pairs_question > 0 && r.question_rows == 1, "{r:?}");
    let best = r.refine_best_epoch.expect("early stopping keeps an epoch");
    let mrr = r.refine_source_mrr[best - 1];
    assert!(r.refine_source_mrr.iter().all(|v| *v <= mrr));
    assert_eq!(r.source_mrr_after, Some(mrr), "the kept rows are the best epoch's");
    assert_eq!(f.rows, fit(&o).rows);
}

#[test]
fn sparse_query_weights_are_the_corpus_idf() {
    let dir = tmpdir("sparse-weights");
    let tok = tokenizer(&dir);
    let vocab = WORDS.len() + 1;
    // alpha in 3 of 4 documents, beta in 1 (twice: counted once), gamma in none; the empty
    // document counts in N.
    let docs = ["alpha beta beta", "alpha", "alpha delta", ""];
    let mut stages = Vec::new();
    let w = lr_fit::sparse_query_weights(&docs, &tok, vocab, &mut |s, f| stages.push((s.to_owned(), f))).unwrap();
    assert_eq!(w.len(), vocab);
    let idf = |df: f64| ((1.0 + (4.0 - df + 0.5) / (df + 0.5)) as f64).ln() as f32;
    assert_eq!(w[1], idf(3.0)); // alpha
    assert_eq!(w[2], idf(1.0)); // beta
    assert_eq!(w[4], idf(1.0)); // delta
    assert_eq!(w[3], idf(0.0)); // gamma: absent, the largest weight
    assert!(w[3] > w[2] && w[2] > w[1] && w[1] > 0.0);
    assert_eq!(stages.first().map(|s| s.0.as_str()), Some("tokenizing documents"));

    assert!(matches!(lr_fit::sparse_query_weights(&[], &tok, vocab, &mut |_, _| {}), Err(FitError::EmptyCorpus)));
    assert!(matches!(lr_fit::sparse_query_weights(&["", "  "], &tok, vocab, &mut |_, _| {}), Err(FitError::NoTokens)));
    // A vocabulary smaller than the tokenizer's ids: the wrong model for this tokenizer.
    assert!(matches!(lr_fit::sparse_query_weights(&["upsilon"], &tok, 5, &mut |_, _| {}), Err(FitError::InvalidInput(_))));
}

/// The fit runs in a backend, where the tokenizer's ≈ 55× of a huge document would abort the
/// server: a document over 4 MiB counts its first 4 MiB (cut between words), and one with no
/// place to cut there is an error naming it, before anything is tokenized.
#[test]
fn documents_over_the_tokenizer_bound_are_cut_or_refused() {
    let dir = tmpdir("bounded-docs");
    let tok = tokenizer(&dir);
    let vocab = WORDS.len() + 1;
    let long = "alpha ".repeat(lr_tokenizer::MAX_TOKENIZED_BYTES / 6 + 100) + "beta";
    let w = lr_fit::sparse_query_weights(&[long.as_str(), "beta"], &tok, vocab, &mut |_, _| {}).unwrap();
    let idf = |df: f64| ((1.0 + (2.0 - df + 0.5) / (df + 0.5)) as f64).ln() as f32;
    assert_eq!(w[1], idf(1.0)); // alpha: in the long document's first 4 MiB
    assert_eq!(w[2], idf(1.0)); // beta: only in the short one (the long one's is past 4 MiB)
    let run = "é".repeat(lr_tokenizer::MAX_TOKENIZED_BYTES / 2 + 1);
    match lr_fit::sparse_query_weights(&["alpha", run.as_str()], &tok, vocab, &mut |_, _| {}) {
        Err(FitError::Tokenizer(m)) => assert!(m.starts_with("document 1: ") && m.contains("too long to tokenize"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sparse_guide_enters_the_refinement_and_weight_zero_changes_nothing() {
    let dir = tmpdir("guide");
    let tok = tokenizer(&dir);
    let docs = corpus();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    // A sparse side that knows every document's words: the source of a span always scores high.
    let sparse: Vec<Vec<(u32, f32)>> = docs.iter().map(|t| lr_tokenizer::count_ids(&tok, t).unwrap()).collect();
    let weights = vec![1.0f32; init_rows().len() / D];
    let o = FitOptions { refine: Refine::Infonce, refine_epochs: 3, refine_batch: 16, refine_lr: 1e-2, refine_early_stop: false, ..small_options() };
    let run = |guide: Option<&lr_fit::SparseGuide>| {
        lr_fit::fit_query_table_guided(&docs, None, &tok, &FakeEncoder, &init_rows(), D, &o, guide, &mut |_, _| {}).unwrap()
    };
    let plain = run(None);
    let zero = run(Some(&lr_fit::SparseGuide { doc_vectors: &sparse, query_weights: &weights, weight: 0.0 }));
    assert_eq!(zero.rows, plain.rows);
    let guided = run(Some(&lr_fit::SparseGuide { doc_vectors: &sparse, query_weights: &weights, weight: 2.0 }));
    assert_ne!(guided.rows, plain.rows);
    assert!(guided.rows.iter().all(|v| v.is_finite()));
    // The guided logits already hold the sparse side's evidence for the source: lower loss.
    assert!(guided.report.refine_loss[0] < plain.report.refine_loss[0], "{:?} vs {:?}", guided.report.refine_loss, plain.report.refine_loss);
    let short = lr_fit::SparseGuide { doc_vectors: &sparse[1..], query_weights: &weights, weight: 1.0 };
    let e = lr_fit::fit_query_table_guided(&docs, None, &tok, &FakeEncoder, &init_rows(), D, &o, Some(&short), &mut |_, _| {});
    assert!(matches!(e, Err(lr_fit::FitError::InvalidInput(_))));
}

/// Records every text the full model is asked for.
struct RecordingEncoder(std::sync::Mutex<Vec<String>>);
impl SpanEncoder for RecordingEncoder {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.lock().unwrap().extend(texts.iter().map(|t| t.to_string()));
        FakeEncoder.encode(texts)
    }
}

/// A fit of `docs` (with `doc_vectors`, or encoding them itself) and every text it asked the
/// full model for, in order.
fn recorded_fit(
    docs: &[&str],
    doc_vectors: Option<&[Vec<f32>]>,
    tok: &lr_tokenizer::Tokenizer,
    o: &FitOptions,
) -> (lr_fit::FittedTable, Vec<String>) {
    let encoder = RecordingEncoder(std::sync::Mutex::new(Vec::new()));
    let fitted = lr_fit::fit_query_table_with_doc_vectors(docs, doc_vectors, tok, &encoder, &init_rows(), D, o, &mut |_, _| {}).unwrap();
    (fitted, encoder.0.into_inner().unwrap())
}

#[test]
fn inverse_cloze_pairs_train_on_the_rest_of_their_document() {
    let dir = tmpdir("cloze");
    let tok = tokenizer(&dir);
    let docs = corpus();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let doc_vectors = FakeEncoder.encode(&docs).unwrap();
    let base = FitOptions { refine: Refine::Infonce, refine_epochs: 2, refine_batch: 16, refine_early_stop: false, ..small_options() };
    let run = |o: &FitOptions| recorded_fit(&docs, Some(&doc_vectors), &tok, o);
    let (plain, plain_texts) = run(&base);
    let cloze = FitOptions { refine_cloze_per_doc: 2, refine_cloze_min_words: 2, refine_cloze_max_words: 4, ..base.clone() };
    let (with_cloze, texts) = run(&cloze);
    // The model is asked for the rests, after the same span targets as before: each is its
    // document with 2-4 contiguous words taken out.
    assert_eq!(texts[..plain_texts.len()], plain_texts[..]);
    let rests = &texts[plain_texts.len()..];
    let pairs = with_cloze.report.refine_pairs - plain.report.refine_pairs;
    assert!(pairs > 0 && rests.len() == pairs, "{} rests, {pairs} pairs", rests.len());
    for rest in rests {
        let r: Vec<&str> = rest.split_whitespace().collect();
        let source = docs.iter().find(|d| {
            let w: Vec<&str> = d.split_whitespace().collect();
            let cut = w.len().saturating_sub(r.len());
            (2..=4).contains(&cut) && (0..=r.len()).any(|s| w[..s] == r[..s] && w[s + cut..] == r[s..])
        });
        assert!(source.is_some(), "{rest:?} is no document less a 2-4-word span");
    }
    assert_ne!(with_cloze.rows, plain.rows);
    assert!(with_cloze.rows.iter().all(|v| v.is_finite()));
    // No sparse guide with them (the guide scores documents, not rests).
    let sparse: Vec<Vec<(u32, f32)>> = docs.iter().map(|t| lr_tokenizer::count_ids(&tok, t).unwrap()).collect();
    let weights = vec![1.0f32; init_rows().len() / D];
    let guide = lr_fit::SparseGuide { doc_vectors: &sparse, query_weights: &weights, weight: 1.0 };
    let e = lr_fit::fit_query_table_guided(&docs, None, &tok, &FakeEncoder, &init_rows(), D, &cloze, Some(&guide), &mut |_, _| {});
    assert!(matches!(e, Err(FitError::InvalidOption(_))));
    let bad = FitOptions { refine_cloze_min_words: 5, refine_cloze_max_words: 4, ..cloze };
    assert!(matches!(FitOptions::from_json(&serde_json::to_value(&bad).unwrap()), Err(FitError::InvalidOption(_))));
}

#[test]
fn question_spans_train_the_rows_of_words_only_questions_contain() {
    // The test vocabulary has no question words: every opener and "?" is [UNK] (id 0), a token
    // no plain span contains, so only the question spans can move its row.
    let base = FitOptions {
        refine: Refine::Infonce,
        refine_epochs: 2,
        refine_batch: 16,
        refine_early_stop: false,
        map_unseen_rows: false,
        ..small_options()
    };
    let plain = fit(&base);
    let asked = FitOptions { refine_question_spans_per_doc: 4, ..base.clone() };
    let with_questions = fit(&asked);
    let train_docs = 60 - (60.0 * base.held_out_fraction).round() as usize;
    let added = with_questions.report.refine_pairs - plain.report.refine_pairs;
    // Four more per training document, less the repeats sample_spans drops.
    assert!(added <= 4 * train_docs && added > 3 * train_docs, "{added} question spans for {train_docs} documents");
    let unk = |f: &lr_fit::FittedTable| f.rows[..D].to_vec();
    assert_eq!(unk(&plain), init_rows()[..D].to_vec(), "no plain span holds [UNK]");
    assert_ne!(unk(&with_questions), init_rows()[..D].to_vec(), "the question spans did not train [UNK]");
    assert!(with_questions.rows.iter().all(|v| v.is_finite()));
    assert_eq!(with_questions.rows, fit(&asked).rows, "not deterministic");
    // Zero question spans is the plain fit, exactly.
    assert_eq!(fit(&FitOptions { refine_question_spans_per_doc: 0, ..base }).rows, plain.rows);
}

#[test]
fn question_words_alone_are_fitted_to_what_the_full_model_makes_of_questions() {
    let dir = tmpdir("questions");
    let tok = tokenizer(&dir);
    let docs = corpus();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let doc_vectors = FakeEncoder.encode(&docs).unwrap();
    let run = |o: &FitOptions| recorded_fit(&docs, Some(&doc_vectors), &tok, o);
    // Without the map, a row no span held stays untrained: the [UNK] row below.
    let base = FitOptions { map_unseen_rows: false, ..small_options() };
    let (plain, plain_texts) = run(&base);
    let (asked, texts) = run(&FitOptions { question_spans_per_doc: 3, ..base.clone() });
    // The model is asked for the same plain spans, and for the questions besides.
    let questions: Vec<&String> = texts.iter().filter(|t| !plain_texts.contains(t)).collect();
    assert_eq!(texts.len(), plain_texts.len() + questions.len());
    assert!(plain_texts.iter().all(|t| texts.contains(t)));
    let train_docs = plain.report.docs_train;
    assert!(questions.len() <= 3 * train_docs && questions.len() > 2 * train_docs, "{} questions for {train_docs} documents", questions.len());
    assert_eq!(asked.report.pairs_train, plain.report.pairs_train);
    assert_eq!(asked.report.pairs_question, questions.len());
    assert_eq!(asked.report.question_rows, 1, "every opener word and \"?\" is [UNK] here");
    for q in &questions {
        let opener = lr_fit::QUESTION_OPENERS.iter().find(|o| q.starts_with(&format!("{o} ")));
        assert!(opener.is_some() && q.ends_with('?'), "{q:?} is not asked");
        let body = &q[opener.unwrap().len() + 1..q.len() - 1];
        assert!(docs.iter().any(|d| d.contains(body)), "{body:?} is in no document");
    }
    // Only the question words' row moves: every other row is the plain fit's, exactly.
    assert_eq!(asked.rows[D..], plain.rows[D..]);
    assert_eq!(plain.rows[..D], init_rows()[..D], "no plain span holds [UNK]");
    assert_ne!(asked.rows[..D], init_rows()[..D], "the questions did not fit [UNK]");
    assert!(asked.rows.iter().all(|v| v.is_finite()));
    // The fit runs twice over the same encodings: the model is asked for each text once.
    let mut once = texts.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), texts.len(), "a text was encoded twice");
    let o = FitOptions { question_spans_per_doc: 3, ..base };
    assert_eq!(run(&o).0.rows, asked.rows, "not deterministic");
}

#[test]
fn question_words_on_the_extensions_path_refined_mapped_and_documents_encoded_by_the_fit() {
    // As the extension may fit: no document vectors (the fit encodes the documents), refinement
    // and the unseen-row map on, the rows before the map kept for comparison.
    let dir = tmpdir("questions-default");
    let tok = tokenizer(&dir);
    let docs = corpus();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let run = |o: &FitOptions| recorded_fit(&docs, None, &tok, o);
    let base = FitOptions {
        held_out_fraction: 0.2,
        agreement_k: 5,
        refine_batch: 16,
        refine_epochs: 2,
        keep_unmapped_rows: true,
        question_spans_per_doc: 0,
        ..Default::default()
    };
    let (plain, _) = run(&base);
    let (asked, texts) = run(&FitOptions { question_spans_per_doc: 2, ..base.clone() });
    let mut once = texts.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), texts.len(), "a text was encoded twice");
    assert!(docs.iter().all(|d| texts.iter().any(|t| t == d)), "the documents were not encoded");
    assert!(asked.report.pairs_question > 0 && asked.report.question_rows == 1, "{:?}", asked.report);
    // Both the final rows and the rows before the map: the question words' row from the fit
    // with questions (where [UNK] is fitted, not mapped), every other row the plain fit's.
    let (pu, au) = (plain.unmapped_rows.as_ref().unwrap(), asked.unmapped_rows.as_ref().unwrap());
    assert_eq!(asked.rows[D..], plain.rows[D..]);
    assert_eq!(au[D..], pu[D..]);
    assert_ne!(asked.rows[..D], plain.rows[..D]);
    assert_ne!(au[..D], pu[..D], "the rows before the map kept the plain fit's question row");
    // centre and questions do not combine: each fit would centre on its own mean.
    let centred = FitOptions { center: true, ..FitOptions::default() };
    assert!(matches!(centred.validate(), Err(FitError::InvalidOption(_))));
    assert!(FitOptions { question_spans_per_doc: 0, ..centred }.validate().is_ok());
}

#[test]
fn unseen_rows_follow_a_linear_relation_between_untrained_and_fitted_rows() {
    // Fitted rows that are exactly the untrained rows through a known map G: an unseen row
    // comes out as its untrained row through G (up to the small ridge term).
    let (vocab, d) = (60usize, 6usize);
    let init: Vec<f32> = (0..vocab).flat_map(|t| hash_vec(&format!("r0:{t}"), d)).collect();
    let g: Vec<f32> = hash_vec("map", d * d);
    let through = |r: &[f32]| -> Vec<f32> { (0..d).map(|j| (0..d).map(|i| r[i] * g[i * d + j]).sum()).collect() };
    let trained: Vec<bool> = (0..vocab).map(|t| t % 5 != 0).collect();
    let mut rows = init.clone();
    for t in (0..vocab).filter(|&t| trained[t]) {
        let v = through(&init[t * d..(t + 1) * d]);
        rows[t * d..(t + 1) * d].copy_from_slice(&v);
    }
    let before = rows.clone();
    assert_eq!(lr_fit::map_unseen_rows(&init, &mut rows, &trained, d).unwrap(), 12);
    for t in 0..vocab {
        let row = &rows[t * d..(t + 1) * d];
        if trained[t] {
            assert_eq!(row, &before[t * d..(t + 1) * d], "a trained row moved");
        } else {
            let want = through(&init[t * d..(t + 1) * d]);
            let err = row.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-2, "row {t}: {row:?} vs {want:?}");
        }
    }
    // Nothing to map, or nothing to learn the map from: rows stay as they are.
    let mut same = before.clone();
    assert_eq!(lr_fit::map_unseen_rows(&init, &mut same, &vec![true; vocab], d).unwrap(), 0);
    assert_eq!(lr_fit::map_unseen_rows(&init, &mut same, &vec![false; vocab], d).unwrap(), 0);
    assert_eq!(same, before);
    assert!(lr_fit::map_unseen_rows(&init, &mut same, &trained[1..], d).is_err());
    // A non-finite fitted row is named, not smeared over every mapped row.
    let mut diverged = before.clone();
    diverged[d + 2] = f32::NAN;
    let err = lr_fit::map_unseen_rows(&init, &mut diverged, &trained, d).unwrap_err().to_string();
    assert!(err.contains("row 1 is not finite"), "{err}");
}

/// Every row outside the ridge-fitted set must be its prior row times the closed-form ridge map
/// from the ridge-fitted rows' priors to their final rows.
fn assert_mapped_from(f: &lr_fit::FittedTable, prior: &[f32]) {
    let vocab = prior.len() / D;
    let fitted: std::collections::HashSet<u32> = f.fitted_ids.iter().copied().collect();
    let (mut gram, mut cross) = (vec![0.0f64; D * D], vec![0.0f64; D * D]);
    for &t in &f.fitted_ids {
        let t = t as usize;
        for i in 0..D {
            for j in 0..D {
                gram[i * D + j] += prior[t * D + i] as f64 * prior[t * D + j] as f64;
                cross[i * D + j] += prior[t * D + i] as f64 * f.rows[t * D + j] as f64;
            }
        }
    }
    // Ridge towards the least-squares scaled identity s·I.
    let trace = |m: &[f64]| (0..D).map(|i| m[i * D + i]).sum::<f64>();
    let (mu, scale) = (1e-3 * trace(&gram) / D as f64, trace(&cross) / trace(&gram));
    (0..D).for_each(|i| {
        gram[i * D + i] += mu;
        cross[i * D + i] += mu * scale;
    });
    solve_dense(&mut gram, D, &mut cross, D);
    let mut checked = 0;
    for t in (0..vocab).filter(|t| !fitted.contains(&(*t as u32))) {
        for j in 0..D {
            let want: f64 = (0..D).map(|i| prior[t * D + i] as f64 * cross[i * D + j]).sum();
            assert!((f.rows[t * D + j] as f64 - want).abs() < 1e-4, "row {t} column {j}: {} vs {want}", f.rows[t * D + j]);
        }
        checked += 1;
    }
    assert_eq!(f.report.tokens_mapped, checked);
    assert_eq!(f.report.tokens_fitted, f.fitted_ids.len());
}

#[test]
fn rows_only_refined_are_mapped_too_and_the_map_starts_from_the_prior_the_fit_used() {
    // One one-word ridge span per training document leaves some words to the refinement spans
    // alone: their rows, a few Adam steps from untrained, are set from the map like rows no
    // span has.
    let sparse_ridge = FitOptions {
        spans_per_doc: 1,
        min_words: 1,
        max_words: 1,
        refine: Refine::Infonce,
        refine_epochs: 2,
        refine_batch: 16,
        refine_spans_per_doc: 8,
        ..small_options()
    };
    let f = fit(&sparse_ridge);
    assert!(f.fitted_ids.len() < WORDS.len(), "every word got a ridge span: {}", f.fitted_ids.len());
    assert!(f.report.refine_tokens > f.fitted_ids.len(), "{:?}", f.report);
    assert_mapped_from(&f, &init_rows());
    // Centred: the prior is the untrained rows minus their mean, and the map starts from it.
    let f = fit(&FitOptions { center: true, ..small_options() });
    let init = init_rows();
    let vocab = init.len() / D;
    let mean: Vec<f32> = (0..D).map(|j| ((0..vocab).map(|t| init[t * D + j] as f64).sum::<f64>() / vocab as f64) as f32).collect();
    let centred: Vec<f32> = init.iter().enumerate().map(|(i, v)| v - mean[i % D]).collect();
    assert_mapped_from(&f, &centred);
    // The linear prior: the map changes only rows the ridge fit did not determine.
    let linear = FitOptions { prior: lr_fit::Prior::Linear, ..small_options() };
    let (on, off) = (fit(&linear), fit(&FitOptions { map_unseen_rows: false, ..linear.clone() }));
    assert!(on.rows.iter().all(|v| v.is_finite()));
    for t in 0..vocab {
        let same = on.rows[t * D..(t + 1) * D] == off.rows[t * D..(t + 1) * D];
        assert_eq!(same, on.fitted_ids.contains(&(t as u32)), "row {t}");
    }
}

#[test]
fn with_fewer_trained_rows_than_dimensions_unseen_rows_keep_their_length() {
    // Fitted rows 1.5 × their prior, on only 8 rows of 64 dimensions: the directions those rows
    // do not span must keep the prior row scaled by 1.5, not collapse towards 0.
    let (vocab, d) = (40usize, 64usize);
    let init: Vec<f32> = (0..vocab).flat_map(|t| hash_vec(&format!("few:{t}"), d)).collect();
    let trained: Vec<bool> = (0..vocab).map(|t| t < 8).collect();
    let mut rows = init.clone();
    rows[..8 * d].iter_mut().for_each(|v| *v *= 1.5);
    lr_fit::map_unseen_rows(&init, &mut rows, &trained, d).unwrap();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for t in 8..vocab {
        let ratio = norm(&rows[t * d..(t + 1) * d]) / norm(&init[t * d..(t + 1) * d]);
        assert!((ratio - 1.5).abs() < 0.02, "row {t}: length ratio {ratio}");
    }
}
