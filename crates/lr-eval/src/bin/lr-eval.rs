//! `lr-eval <beir-dir> [options]`: every query encoder of the extension over one BEIR collection.
//!
//! Rows: BM25 over the dense model's tokenizer, full-query dense, lookup dense with the untrained
//! table, lookup dense with the fitted table (lr-fit on the collection's own documents, no labels),
//! sparse (document sparse model; raw-count queries, and idf·count queries as after
//! `lr_fit_sparse_query_weights`), hybrid (fitted lookup dense + sparse, per query min-max over
//! each side's top 1000, 0.7/0.3, as published), and lr_search's settings (its z-score default,
//! reciprocal rank, a depth cut, feedback) through `lr_search::search`, the extension's own
//! ranking. Documents are title + " " + text; search is exact, in memory. Progress goes to
//! stderr, the table to stdout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use lr_eval::systems::*;
use lr_eval::{evaluate, search, svg, Bm25, Collection, Qrels, Run, Scores};
use lr_fit::{FitOptions, FitReport, SpanEncoder};
use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::BertEncoder;
use lr_table::{Dtype, LookupEncoder, QueryTable, TableMeta, TableWriter};

const USAGE: &str = "usage: lr-eval <beir-dir> [--model-dir DIR] [--sparse-model-dir DIR | --no-sparse]
               [--fit-options JSON|@FILE] [--svg OUT.svg] [--json OUT.json] [--split test]
               [--bm25 K1,B] [--cache-dir DIR] [--sweep OPTIONS.jsonl] [--dump DIR]
               [--sparse-guide WEIGHT]

  --cache-dir  keeps full-encoder vectors (documents, queries, spans) and the untrained table
               between runs; timings of a cached run are not fit timings.
  --sweep      fits once per line of OPTIONS.jsonl (FitOptions JSON) and prints, per line, the
               held-out agreement the fit reports and the collection's lookup scores.
  --dump       writes the vectors of every side (documents, fitted table, pseudo-queries, judged
               queries) as raw little-endian f32 files and meta.json into DIR, for studies outside
               Rust (scripts/quality_study.py); a collection without queries or qrels is allowed.
  --sparse-guide the fit's refinement sees the sparse side (lr_fit::SparseGuide, this weight on
               its z-scored score in every logit).";

struct Args {
    beir: PathBuf,
    model_dir: PathBuf,
    sparse_model_dir: Option<PathBuf>,
    fit_options: FitOptions,
    svg: Option<PathBuf>,
    json: Option<PathBuf>,
    split: String,
    k1: f64,
    b: f64,
    cache_dir: Option<PathBuf>,
    sweep: Option<PathBuf>,
    hybrid_study: bool,
    dump: Option<PathBuf>,
    sparse_guide: Option<f32>,
}

fn model_root() -> PathBuf {
    std::env::var_os("LR_MODEL_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/opt/lightretriever/models"))
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut beir = None;
    let mut a = Args {
        beir: PathBuf::new(),
        model_dir: model_root().join("all-minilm-l6-v2"),
        sparse_model_dir: Some(model_root().join("splade-tiny")),
        fit_options: FitOptions::default(),
        svg: None,
        json: None,
        split: "test".into(),
        k1: 0.9,
        b: 0.4,
        cache_dir: None,
        sweep: None,
        hybrid_study: false,
        dump: None,
        sparse_guide: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--model-dir" => a.model_dir = value("--model-dir")?.into(),
            "--sparse-model-dir" => a.sparse_model_dir = Some(value("--sparse-model-dir")?.into()),
            "--no-sparse" => a.sparse_model_dir = None,
            "--fit-options" => {
                let v = value("--fit-options")?;
                let text = match v.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
                    None => v,
                };
                let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("--fit-options: {e}"))?;
                a.fit_options = FitOptions::from_json(&json).map_err(|e| e.to_string())?;
            }
            "--svg" => a.svg = Some(value("--svg")?.into()),
            "--json" => a.json = Some(value("--json")?.into()),
            "--split" => a.split = value("--split")?,
            "--bm25" => {
                let v = value("--bm25")?;
                let (k1, b) = v.split_once(',').ok_or("--bm25 takes K1,B")?;
                a.k1 = k1.trim().parse().map_err(|_| "--bm25: bad k1")?;
                a.b = b.trim().parse().map_err(|_| "--bm25: bad b")?;
            }
            "--cache-dir" => a.cache_dir = Some(value("--cache-dir")?.into()),
            "--sweep" => a.sweep = Some(value("--sweep")?.into()),
            "--hybrid-study" => a.hybrid_study = true,
            "--dump" => a.dump = Some(value("--dump")?.into()),
            "--sparse-guide" => a.sparse_guide = Some(value("--sparse-guide")?.parse().map_err(|_| "--sparse-guide takes a number")?),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            s => {
                if beir.replace(PathBuf::from(s)).is_some() {
                    return Err(format!("one collection directory only\n{USAGE}"));
                }
            }
        }
    }
    a.beir = beir.ok_or_else(|| USAGE.to_string())?;
    Ok(a)
}

fn fnv(bytes: &[u8]) -> u64 {
    lr_table::fnv1a64_words(0xcbf2_9ce4_8422_2325, bytes) ^ (bytes.len() as u64).rotate_left(17)
}

/// The full encoder with an optional on-disk memo of text → vector (keyed by a 64-bit hash of
/// the text; the file is per model).
struct CachedEncoder<'a> {
    inner: &'a BertEncoder,
    memo: RefCell<HashMap<u64, Vec<f32>>>,
    file: Option<PathBuf>,
    dims: usize,
    hits: RefCell<usize>,
}

impl<'a> CachedEncoder<'a> {
    fn new(inner: &'a BertEncoder, cache_dir: Option<&Path>) -> Self {
        let dims = inner.dim();
        let file = cache_dir.map(|d| d.join(format!("vectors-{:016x}.bin", fnv(inner.info().path.to_string_lossy().as_bytes()))));
        let mut memo = HashMap::new();
        if let Some(f) = &file {
            if let Ok(mut fh) = std::fs::File::open(f) {
                let mut bytes = Vec::new();
                if fh.read_to_end(&mut bytes).is_ok() {
                    let rec = 8 + 4 * dims;
                    for r in bytes.chunks_exact(rec) {
                        let key = u64::from_le_bytes(r[..8].try_into().unwrap());
                        let v = r[8..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                        memo.insert(key, v);
                    }
                }
            }
        }
        CachedEncoder { inner, memo: RefCell::new(memo), file, dims, hits: RefCell::new(0) }
    }

    fn save(&self) {
        let Some(f) = &self.file else { return };
        let memo = self.memo.borrow();
        let mut keys: Vec<&u64> = memo.keys().collect();
        keys.sort();
        let mut bytes = Vec::with_capacity(memo.len() * (8 + 4 * self.dims));
        for k in keys {
            bytes.extend_from_slice(&k.to_le_bytes());
            memo[k].iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        let tmp = f.with_extension("tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(tmp, f);
        }
    }
}

impl SpanEncoder for CachedEncoder<'_> {
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if self.file.is_none() {
            return SpanEncoder::encode(self.inner, texts);
        }
        let keys: Vec<u64> = texts.iter().map(|t| fnv(t.as_bytes())).collect();
        let missing: Vec<usize> = {
            let memo = self.memo.borrow();
            (0..texts.len()).filter(|&i| !memo.contains_key(&keys[i])).collect()
        };
        *self.hits.borrow_mut() += texts.len() - missing.len();
        if !missing.is_empty() {
            let fresh = SpanEncoder::encode(self.inner, &missing.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
            let mut memo = self.memo.borrow_mut();
            for (&i, v) in missing.iter().zip(fresh) {
                memo.insert(keys[i], v);
            }
        }
        let memo = self.memo.borrow();
        Ok(keys.iter().map(|k| memo[k].clone()).collect())
    }
}

fn progress_printer(stage_prefix: &'static str) -> impl FnMut(&str, f64) {
    let mut last = (String::new(), -1.0f64);
    move |stage: &str, f: f64| {
        if stage != last.0 || f >= last.1 + 0.1 || f >= 1.0 && last.1 < 1.0 {
            eprintln!("  [{stage_prefix}] {stage}: {:.0}%", f * 100.0);
            last = (stage.to_string(), f);
        }
    }
}

/// Writes a table file (optionally with weights) and opens it through the real lookup path.
fn lookup_encoder(path: &Path, rows: &[f32], weights: Option<&[f32]>, dims: usize, tokenizer_json: &Path) -> Result<LookupEncoder, String> {
    let meta = TableMeta { model: "lr-eval".into(), instruction: None, tokenizer_fingerprint: String::new(), build: serde_json::Value::Null };
    let vocab = rows.len() / dims;
    let mut w = TableWriter::create(path, &meta, vocab as u64, dims as u32, Dtype::F32).map_err(|e| e.to_string())?;
    w.write_rows(rows).map_err(|e| e.to_string())?;
    if let Some(weights) = weights {
        w.write_weights(weights).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    let table = QueryTable::open(path).map_err(|e| e.to_string())?;
    let tok = lr_tokenizer::load_tokenizer(tokenizer_json, None)?;
    Ok(LookupEncoder::new(table, tok))
}

fn lookup_queries(enc: &LookupEncoder, queries: &[(String, String)], dims: usize) -> Vec<Vec<f32>> {
    queries
        .iter()
        .map(|(_, q)| enc.encode(q).unwrap_or_else(|_| vec![0.0; dims]))
        .collect()
}

/// Ranked top-`k` per query from a score matrix.
fn run_from_scores(scores: &[Vec<f32>], queries: &[(String, String)], doc_ids: &[String], k: usize) -> Run {
    queries
        .iter()
        .zip(scores)
        .map(|((qid, _), s)| (qid.clone(), search::top_k(s, k).into_iter().map(|(i, v)| (doc_ids[i].clone(), v)).collect()))
        .collect()
}

struct Row {
    name: String,
    scores: Option<Scores>,
    note: String,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("lr-eval: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    let t_all = Instant::now();
    let coll = Collection::load(&args.beir, &args.split)?;
    let name = args.beir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!("{name}: {} documents, {} judged queries", coll.docs.len(), coll.queries.len());
    if coll.docs.is_empty() || coll.queries.is_empty() && args.dump.is_none() {
        return Err("the collection has no documents or no judged queries (an unlabelled corpus needs --dump)".into());
    }
    let doc_texts: Vec<String> = coll.docs.iter().map(|d| d.full_text()).collect();
    let doc_refs: Vec<&str> = doc_texts.iter().map(String::as_str).collect();
    let doc_ids: Vec<String> = coll.docs.iter().map(|d| d.id.clone()).collect();
    let query_texts: Vec<&str> = coll.queries.iter().map(|(_, q)| q.as_str()).collect();
    if let Some(c) = &args.cache_dir {
        std::fs::create_dir_all(c).map_err(|e| format!("{}: {e}", c.display()))?;
    }
    let work = std::env::temp_dir().join(format!("lr-eval-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let result = evaluate_all(&args, &coll, &name, &doc_refs, &doc_ids, &query_texts, &work, t_all);
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[allow(clippy::too_many_arguments)]
fn evaluate_all(
    args: &Args,
    coll: &Collection,
    name: &str,
    doc_refs: &[&str],
    doc_ids: &[String],
    query_texts: &[&str],
    work: &Path,
    t_all: Instant,
) -> Result<(), String> {
    let qrels: &Qrels = &coll.qrels;
    let info = ModelInfo::inspect(&args.model_dir, &ModelOptions::default()).map_err(|e| e.to_string())?;
    let bert = BertEncoder::load(&info, &Device::Cpu).map_err(|e| e.to_string())?;
    let dims = bert.dim();
    let tokenizer_json = info.tokenizer_path();
    let plain_tok = lr_tokenizer::load_tokenizer(&tokenizer_json, None)?;
    let cached = CachedEncoder::new(&bert, args.cache_dir.as_deref());
    let mut timings: Vec<(&str, f64)> = Vec::new();

    // Full encoder: documents and queries.
    let t = Instant::now();
    eprintln!("encoding {} documents with the full model", doc_refs.len());
    let mut doc_vectors = Vec::with_capacity(doc_refs.len());
    for (i, chunk) in doc_refs.chunks(128).enumerate() {
        doc_vectors.extend(cached.encode(chunk)?);
        if i % 4 == 3 {
            eprintln!("  documents: {}/{}", doc_vectors.len(), doc_refs.len());
        }
    }
    timings.push(("encode documents (full model)", t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let full_queries = cached.encode(query_texts)?;
    timings.push(("encode queries (full model)", t.elapsed().as_secs_f64()));
    cached.save();

    // The untrained table: every vocabulary id as `[CLS] id [SEP]`.
    let t = Instant::now();
    let init_rows = untrained_table(&bert, args.cache_dir.as_deref())?;
    timings.push(("untrained table (all ids through the model)", t.elapsed().as_secs_f64()));

    let full_scores = search::dense_scores(&full_queries, &doc_vectors)?;
    let full_run = run_from_scores(&full_scores, &coll.queries, doc_ids, 1000);
    let full = evaluate(&full_run, qrels);

    if let Some(sweep) = &args.sweep {
        return run_sweep(sweep, args, coll, doc_refs, doc_ids, &doc_vectors, &plain_tok, &cached, &init_rows, dims, &tokenizer_json, work, full);
    }

    // BM25 over the same tokenizer.
    let t = Instant::now();
    let doc_tokens: Vec<Vec<u32>> = doc_refs.iter().map(|d| lr_tokenizer::plain_ids(&plain_tok, d)).collect::<Result<_, _>>()?;
    let bm25 = Bm25::new(&doc_tokens, args.k1, args.b);
    let bm25_scores: Vec<Vec<f32>> = query_texts
        .iter()
        .map(|q| lr_tokenizer::plain_ids(&plain_tok, q).map(|ids| bm25.scores(&ids)))
        .collect::<Result<_, _>>()?;
    let bm25_run = run_from_scores(&bm25_scores, &coll.queries, doc_ids, 1000);
    timings.push(("BM25 index and search", t.elapsed().as_secs_f64()));

    // Lookup with the untrained table (plain mean).
    let untrained = lookup_encoder(&work.join("untrained.lrt"), &init_rows, None, dims, &tokenizer_json)?;
    let q = lookup_queries(&untrained, &coll.queries, dims);
    let untrained_run = run_from_scores(&search::dense_scores(&q, &doc_vectors)?, &coll.queries, doc_ids, 1000);
    drop(untrained);

    // Fit on the collection's own documents.
    eprintln!("fitting the query table on the documents (no labels)");
    let mut progress = progress_printer("fit");
    let guide_side = match args.sparse_guide {
        Some(_) => Some(SparseSide::load(args, doc_refs, &mut timings)?.map_err(|why| format!("--sparse-guide: {why}"))?),
        None => None,
    };
    let guide = guide_side.as_ref().zip(args.sparse_guide).map(|(side, weight)| lr_fit::SparseGuide {
        doc_vectors: &side.docs,
        query_weights: &side.weights,
        weight,
    });
    // The rows before the unseen-row map come back too, for the rows printed without it.
    let fit_options = lr_fit::FitOptions { keep_unmapped_rows: args.dump.is_none(), ..args.fit_options.clone() };
    let fitted = lr_fit::fit_query_table_guided(
        doc_refs,
        Some(&doc_vectors),
        &plain_tok,
        &cached,
        &init_rows,
        dims,
        &fit_options,
        guide.as_ref(),
        &mut progress,
    )
    .map_err(|e| e.to_string())?;
    cached.save();
    timings.push(("fit (lr-fit, given document vectors)", fitted.report.seconds_total));
    let fitted_enc = lookup_encoder(&work.join("fitted.lrt"), &fitted.rows, fitted.weights.as_deref(), dims, &tokenizer_json)?;
    let t = Instant::now();
    let fq = lookup_queries(&fitted_enc, &coll.queries, dims);
    timings.push(("encode queries (fitted lookup)", t.elapsed().as_secs_f64()));
    let fitted_run = run_from_scores(&search::dense_scores(&fq, &doc_vectors)?, &coll.queries, doc_ids, 1000);
    // The same fit without the map (map_unseen_rows off, the fit before issue 17's map), to
    // print beside it: the fit's rows before the map (not for --dump, which prints no table).
    let unmapped_q: Option<Vec<Vec<f32>>> = match &fitted.unmapped_rows {
        Some(rows) if fitted.report.tokens_mapped > 0 => {
            let enc = lookup_encoder(&work.join("fitted-unmapped.lrt"), rows, fitted.weights.as_deref(), dims, &tokenizer_json)?;
            Some(lookup_queries(&enc, &coll.queries, dims))
        }
        _ => None,
    };

    let mut rows = vec![
        Row { name: format!("BM25 (k1={}, b={}, model tokenizer)", args.k1, args.b), scores: Some(evaluate(&bm25_run, qrels)), note: String::new() },
        Row { name: FULL.into(), scores: Some(full), note: String::new() },
        Row { name: UNTRAINED.into(), scores: Some(evaluate(&untrained_run, qrels)), note: String::new() },
        Row { name: FITTED.into(), scores: Some(evaluate(&fitted_run, qrels)), note: String::new() },
    ];
    if let Some(q) = &unmapped_q {
        let run = run_from_scores(&search::dense_scores(q, &doc_vectors)?, &coll.queries, doc_ids, 1000);
        rows.push(Row { name: UNMAPPED_DENSE.into(), scores: Some(evaluate(&run, qrels)), note: "map_unseen_rows false".into() });
    }

    // Sparse and hybrid (the side the guided fit loaded, if any).
    let sparse_side = match guide_side {
        Some(side) => Ok(side),
        None => SparseSide::load(args, doc_refs, &mut timings)?,
    };
    match sparse_side {
        Ok(side) if args.dump.is_some() => {
            let dir = args.dump.as_deref().unwrap();
            dump(dir, args, doc_refs, coll, doc_ids, &doc_vectors, &full_queries, &fitted, &fq, &side, &cached, dims)?;
            eprintln!("dumped to {}", dir.display());
            return Ok(());
        }
        Ok(side) => {
            if args.hybrid_study {
                hybrid_study(&side, &fitted, &fitted_enc, &cached, &doc_vectors, coll, doc_ids, &fq, &full_queries)?;
            }
            let counts = side.candidates_per_query(&coll.queries, false)?;
            let idf = side.candidates_per_query(&coll.queries, true)?;
            let mut push = |name: &str, run: &Run, note: &str| {
                rows.push(Row { name: name.into(), scores: Some(evaluate(run, qrels)), note: note.into() })
            };
            let ls = LrSearch { docs: &doc_vectors, queries: &coll.queries, doc_ids };
            push(SPARSE_COUNTS, &ls.sparse_run(&counts), "");
            push(SPARSE_IDF, &ls.sparse_run(&idf), "");
            // The hybrids, each exactly as lr_search ranks it: the published rows, then lr_search's
            // other settings (issue 17).
            let (published, none, unsmoothed) = (lr_search::Fusion::PUBLISHED, lr_search::Feedback::NONE, lr_search::Smoothing::NONE);
            push(HYBRID, &ls.run(&fq, &idf, published, none, unsmoothed)?, "");
            push(HYBRID_COUNTS, &ls.run(&fq, &counts, published, none, unsmoothed)?, "");
            push("hybrid (full dense 0.7 + idf·count sparse 0.3)", &ls.run(&full_queries, &idf, published, none, unsmoothed)?, "reference");
            for (name, dense_q, fusion, feedback, smoothing, note) in lr_search_rows(&fq, &full_queries) {
                push(name, &ls.run(dense_q, &idf, fusion, feedback, smoothing)?, note);
            }
            if let Some(q) = &unmapped_q {
                push(UNMAPPED_DEFAULT, &ls.run(q, &idf, lr_search::Fusion::DEFAULT, none, lr_search::Smoothing::DEFAULT)?, "map_unseen_rows false");
            }
        }
        Err(why) => {
            eprintln!("sparse model not available: {why}");
            for name in [SPARSE_COUNTS, HYBRID] {
                rows.push(Row { name: name.into(), scores: None, note: format!("sparse model not available: {why}") });
            }
        }
    }
    timings.push(("total", t_all.elapsed().as_secs_f64()));

    print_table(name, coll, &rows, full, &fitted.report, &timings, *cached.hits.borrow());
    if let Some(path) = &args.json {
        let systems: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "system": r.name,
                    "ndcg_at_10": r.scores.map(|s| s.ndcg_at_10),
                    "recall_at_100": r.scores.map(|s| s.recall_at_100),
                    "ndcg_vs_full_dense": r.scores.map(|s| s.ndcg_at_10 / full.ndcg_at_10),
                    "note": r.note,
                })
            })
            .collect();
        let v = serde_json::json!({
            "collection": name,
            "documents": coll.docs.len(),
            "queries": coll.queries.len(),
            "model": args.model_dir,
            "sparse_model": args.sparse_model_dir,
            "bm25": {"k1": args.k1, "b": args.b},
            "systems": systems,
            "fit_report": fitted.report,
            "timings_seconds": timings.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
            "cache_hits": *cached.hits.borrow(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let bars: Vec<svg::Bar> = rows
            .iter()
            .filter_map(|r| r.scores.map(|s| svg::Bar { label: &r.name, values: vec![s.ndcg_at_10, s.recall_at_100] }))
            .collect();
        let chart = svg::bar_chart(&format!("{name}: query encoders ({} queries)", coll.queries.len()), &["nDCG@10", "Recall@100"], &bars);
        std::fs::write(path, chart).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The lr_search rows beside the published ones: (name, dense query vectors, fusion, feedback,
/// smoothing, note). The first is lr_search's default (docs/quality.md says how it was chosen).
#[allow(clippy::type_complexity)]
fn lr_search_rows<'a>(
    fitted: &'a [Vec<f32>],
    full: &'a [Vec<f32>],
) -> Vec<(&'static str, &'a [Vec<f32>], lr_search::Fusion, lr_search::Feedback, lr_search::Smoothing, &'static str)> {
    use lr_search::{Feedback, Fusion, Normalisation, Smoothing};
    let z = Fusion::DEFAULT;
    let rrf = Fusion { normalisation: Normalisation::Rank { k: 60.0 }, dense_weight: 0.5, ..Fusion::PUBLISHED };
    let top100 = Fusion { depth: 100, ..Fusion::PUBLISHED };
    let fb = Feedback { documents: 3, weight: 0.5 };
    let (none, smoothed, unsmoothed) = (Feedback::NONE, Smoothing::DEFAULT, Smoothing::NONE);
    vec![
        (LR_SEARCH_DEFAULT, fitted, z, none, smoothed, "lr_search's default"),
        (UNSMOOTHED_DEFAULT, fitted, z, none, unsmoothed, "smoothing => 0"),
        (RRF, fitted, rrf, none, unsmoothed, ""),
        (MINMAX_TOP_100, fitted, top100, none, unsmoothed, "candidates => 100"),
        (MINMAX_FEEDBACK, fitted, Fusion::PUBLISHED, fb, unsmoothed, ""),
        (ZSCORE_FEEDBACK, fitted, z, fb, unsmoothed, ""),
        (FULL_HYBRID_Z, full, z, none, unsmoothed, "reference"),
        ("hybrid, z-score + smoothing (full dense 0.7 + idf·count sparse 0.3)", full, z, none, smoothed, "reference"),
    ]
}

const UNMAPPED_DENSE: &str = "lookup dense (fitted table without the unseen-row map)";
const UNMAPPED_DEFAULT: &str = "lr_search default, fitted table without the unseen-row map";

/// lr_search over the collection in memory: `lr_search::search` with exact top-1000 dense
/// candidates, a sparse side's top 1000 per query (computed once, [`SparseSide::candidates_per_query`]),
/// and the stored vectors for feedback and smoothing.
struct LrSearch<'a> {
    docs: &'a [Vec<f32>],
    queries: &'a [(String, String)],
    doc_ids: &'a [String],
}

impl LrSearch<'_> {
    fn run(
        &self,
        dense_queries: &[Vec<f32>],
        sparse: &[Vec<(i64, f32)>],
        fusion: lr_search::Fusion,
        feedback: lr_search::Feedback,
        smoothing: lr_search::Smoothing,
    ) -> Result<Run, String> {
        let mut run = Run::new();
        for (((qid, _), q), sparse) in self.queries.iter().zip(dense_queries).zip(sparse) {
            let scan = |v: &[f32]| search::dense_scores(&[v.to_vec()], self.docs).map(|s| candidates(&s[0], false));
            let vectors = |ids: &[i64]| -> Result<Vec<(i64, Vec<f32>)>, String> { Ok(ids.iter().map(|&i| (i, self.docs[i as usize].clone())).collect()) };
            let request = lr_search::Request { query: q, sparse, mode: lr_search::Mode::Hybrid, fusion, feedback, smoothing, k: 1000 };
            let hits = lr_search::search(&request, scan, vectors)?;
            run.insert(qid.clone(), hits.into_iter().map(|h| (self.doc_ids[h.id as usize].clone(), h.score)).collect());
        }
        Ok(run)
    }

    /// The sparse side alone: its candidates with their raw scores.
    fn sparse_run(&self, sparse: &[Vec<(i64, f32)>]) -> Run {
        self.queries
            .iter()
            .zip(sparse)
            .map(|((qid, _), top)| (qid.clone(), top.iter().map(|&(i, s)| (self.doc_ids[i as usize].clone(), s)).collect()))
            .collect()
    }
}

fn print_table(name: &str, coll: &Collection, rows: &[Row], full: Scores, report: &FitReport, timings: &[(&str, f64)], hits: usize) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{name}: {} documents, {} judged queries\n", coll.docs.len(), coll.queries.len());
    let _ = writeln!(out, "| system | nDCG@10 | Recall@100 | nDCG@10 vs full-query dense |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for r in rows {
        match r.scores {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "| {} | {:.4} | {:.4} | {:.1}% |",
                    r.name,
                    s.ndcg_at_10,
                    s.recall_at_100,
                    100.0 * s.ndcg_at_10 / full.ndcg_at_10
                );
            }
            None => {
                let _ = writeln!(out, "| {} | – | – | {} |", r.name, r.note);
            }
        }
    }
    let _ = writeln!(out, "\nfit: {} training pairs, {} held out; {} rows fitted, {} unseen rows mapped; {} CG iterations (residual {:.1e}); refinement epochs {}",
        report.pairs_train, report.pairs_held_out, report.tokens_fitted, report.tokens_mapped, report.solver_iterations, report.solver_relative_residual, report.refine_epochs);
    if let (Some(b), Some(a)) = (report.agreement_before, report.agreement_after) {
        let _ = writeln!(out, "held-out agreement@{} with the full encoder: {:.3} untrained → {:.3} fitted; held-out cosine {:.3} → {:.3}",
            report.agreement_k, b, a, report.cosine_held_out_before.unwrap_or(0.0), report.cosine_held_out_after.unwrap_or(0.0));
    }
    let _ = writeln!(out, "fit seconds: {:.1} (encode spans {:.1}, solve {:.1}, refine {:.1})",
        report.seconds_total, report.seconds_encode_spans, report.seconds_solve, report.seconds_refine);
    for (k, v) in timings {
        let _ = writeln!(out, "  {k}: {v:.1} s");
    }
    if hits > 0 {
        let _ = writeln!(out, "  ({hits} encodings came from the cache: timings above are not cold timings)");
    }
}

/// Every vocabulary id as `[CLS] id [SEP]` through the model (cached when asked).
fn untrained_table(bert: &BertEncoder, cache_dir: Option<&Path>) -> Result<Vec<f32>, String> {
    let vocab = bert.info().vocab_size;
    let dims = bert.dim();
    let file = cache_dir.map(|d| d.join(format!("untrained-{:016x}.f32", fnv(bert.info().path.to_string_lossy().as_bytes()))));
    if let Some(f) = &file {
        if let Ok(bytes) = std::fs::read(f) {
            if bytes.len() == vocab * dims * 4 {
                return Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
            }
        }
    }
    eprintln!("building the untrained table ({vocab} ids)");
    let ids: Vec<u32> = (0..vocab as u32).collect();
    let mut rows = Vec::with_capacity(vocab * dims);
    for (i, chunk) in ids.chunks(512).enumerate() {
        for r in bert.token_table_rows(chunk).map_err(|e| e.to_string())? {
            rows.extend(r);
        }
        if i % 10 == 9 {
            eprintln!("  table rows: {}/{vocab}", rows.len() / dims);
        }
    }
    if let Some(f) = &file {
        let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        let _ = std::fs::write(f, bytes);
    }
    Ok(rows)
}

/// The sparse model, its document vectors and the corpus's query weights, built once. Queries
/// are raw counts (LightRetriever's, and `lr_encode_query_sparse` before any weights are fitted)
/// or idf·count (after `lr_fit_sparse_query_weights` on the same documents:
/// `lr_fit::sparse_query_weights`).
struct SparseSide {
    encoder: lr_encoders::SparseEncoder,
    model_path: PathBuf,
    docs: Vec<Vec<(u32, f32)>>,
    tokenizer: lr_tokenizer::Tokenizer,
    weights: Vec<f32>,
}

impl SparseSide {
    fn load(args: &Args, doc_refs: &[&str], timings: &mut Vec<(&str, f64)>) -> Result<Result<SparseSide, String>, String> {
        let Some(dir) = &args.sparse_model_dir else { return Ok(Err("--no-sparse".into())) };
        if !dir.join("config.json").is_file() {
            return Ok(Err(format!("{} has no model", dir.display())));
        }
        let info = ModelInfo::inspect(dir, &ModelOptions::default()).map_err(|e| e.to_string())?;
        let enc = lr_encoders::SparseEncoder::load(&info, &Device::Cpu).map_err(|e| e.to_string())?;
        let t = Instant::now();
        eprintln!("encoding {} documents with the sparse model", doc_refs.len());
        let docs = cached_sparse(&enc, doc_refs, args.cache_dir.as_deref(), &info.path)?;
        timings.push(("encode documents (sparse model)", t.elapsed().as_secs_f64()));
        let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), None)?;
        let weights =
            lr_fit::sparse_query_weights(doc_refs, &tokenizer, info.vocab_size, &mut |_, _| {}).map_err(|e| e.to_string())?;
        Ok(Ok(SparseSide { encoder: enc, model_path: info.path.clone(), docs, tokenizer, weights }))
    }

    /// As the extension's lr_encode_query_sparse: plain ids cut at 512, raw counts, times the
    /// fitted weights when `weighted`.
    fn query(&self, text: &str, weighted: bool) -> Result<Vec<(u32, f32)>, String> {
        let mut ids = lr_tokenizer::plain_ids(&self.tokenizer, text)?;
        ids.truncate(lr_table::MAX_QUERY_TOKENS);
        let mut v = lr_tokenizer::counts_of(&ids);
        if weighted {
            v.iter_mut().for_each(|(i, c)| *c *= self.weights.get(*i as usize).copied().unwrap_or(0.0));
        }
        Ok(v)
    }

    /// lr_search's sparse candidates for `text`: the top 1000 documents (indices) with a
    /// positive score.
    fn candidates(&self, text: &str, weighted: bool) -> Result<Vec<(i64, f32)>, String> {
        let qv = self.query(text, weighted)?;
        let scores: Vec<f32> = self.docs.iter().map(|d| search::sparse_dot(&qv, d)).collect();
        Ok(candidates(&scores, true))
    }

    /// [`Self::candidates`] of every query, in order.
    fn candidates_per_query(&self, queries: &[(String, String)], weighted: bool) -> Result<Vec<Vec<(i64, f32)>>, String> {
        queries.iter().map(|(_, q)| self.candidates(q, weighted)).collect()
    }

    /// Texts through the sparse model, memoised in the cache directory.
    fn encode_cached(&self, texts: &[&str], cache: Option<&Path>) -> Result<Vec<Vec<(u32, f32)>>, String> {
        cached_sparse(&self.encoder, texts, cache, &self.model_path)
    }
}

fn cached_sparse(enc: &lr_encoders::SparseEncoder, docs: &[&str], cache: Option<&Path>, model: &Path) -> Result<Vec<Vec<(u32, f32)>>, String> {
    let key = {
        let mut k = fnv(model.to_string_lossy().as_bytes());
        docs.iter().for_each(|d| k = k.rotate_left(5) ^ fnv(d.as_bytes()));
        k
    };
    let file = cache.map(|c| c.join(format!("sparse-{key:016x}.json")));
    if let Some(f) = &file {
        if let Ok(text) = std::fs::read_to_string(f) {
            if let Ok(v) = serde_json::from_str::<Vec<Vec<(u32, f32)>>>(&text) {
                if v.len() == docs.len() {
                    return Ok(v);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(docs.len());
    for (i, chunk) in docs.chunks(64).enumerate() {
        out.extend(enc.encode(chunk).map_err(|e| e.to_string())?);
        if i % 4 == 3 {
            eprintln!("  sparse documents: {}/{}", out.len(), docs.len());
        }
    }
    if let Some(f) = &file {
        let _ = std::fs::write(f, serde_json::to_string(&out).unwrap());
    }
    Ok(out)
}

/// One fit per options line; prints the fit's own held-out numbers and the collection's scores.
#[allow(clippy::too_many_arguments)]
fn run_sweep(
    path: &Path,
    args: &Args,
    coll: &Collection,
    doc_refs: &[&str],
    doc_ids: &[String],
    doc_vectors: &[Vec<f32>],
    tok: &lr_tokenizer::Tokenizer,
    cached: &CachedEncoder,
    init_rows: &[f32],
    dims: usize,
    tokenizer_json: &Path,
    work: &Path,
    full: Scores,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("full-query dense: nDCG@10 {:.4} R@100 {:.4}", full.ndcg_at_10, full.recall_at_100);
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        let json: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
        let options = FitOptions::from_json(&json).map_err(|e| format!("{line}: {e}"))?;
        let mut quiet = |_: &str, _: f64| {};
        let fitted = lr_fit::fit_query_table_with_doc_vectors(doc_refs, Some(doc_vectors), tok, cached, init_rows, dims, &options, &mut quiet)
            .map_err(|e| format!("{line}: {e}"))?;
        cached.save();
        let enc = lookup_encoder(&work.join("sweep.lrt"), &fitted.rows, fitted.weights.as_deref(), dims, tokenizer_json)?;
        let q = lookup_queries(&enc, &coll.queries, dims);
        let run = run_from_scores(&search::dense_scores(&q, doc_vectors)?, &coll.queries, doc_ids, 1000);
        let s = evaluate(&run, &coll.qrels);
        let r = &fitted.report;
        println!(
            "{} | agreement {:.4} (before {:.4}) src-MRR {:.4} (full {:.4}) src@k {:.4} (full {:.4}) cos {:.4} | iters {} | fit {:.1}s | nDCG@10 {:.4} R@100 {:.4} ({:.1}%) | refine kept epoch {:?} agreement {:?} src-MRR {:?}",
            line.trim(),
            r.agreement_after.unwrap_or(f64::NAN),
            r.agreement_before.unwrap_or(f64::NAN),
            r.source_mrr_after.unwrap_or(f64::NAN),
            r.source_mrr_full.unwrap_or(f64::NAN),
            r.source_top_k_after.unwrap_or(f64::NAN),
            r.source_top_k_full.unwrap_or(f64::NAN),
            r.cosine_held_out_after.unwrap_or(f64::NAN),
            r.solver_iterations,
            r.seconds_total,
            s.ndcg_at_10,
            s.recall_at_100,
            100.0 * s.ndcg_at_10 / full.ndcg_at_10,
            r.refine_best_epoch,
            r.refine_agreement.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>(),
            r.refine_source_mrr.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>(),
        );
        let _ = std::io::stdout().flush();
        let _ = args;
    }
    Ok(())
}

/// Known-item MRR@10 of a ranked list of document indices.
fn reciprocal_rank(ranked: &[i64], source: usize) -> f64 {
    ranked.iter().take(10).position(|&d| d == source as i64).map_or(0.0, |r| 1.0 / (r as f64 + 1.0))
}

/// Top-1000 (index, score) of one score vector, as lr_search's candidate lists.
fn candidates(scores: &[f32], positive_only: bool) -> Vec<(i64, f32)> {
    search::top_k(scores, 1000).into_iter().filter(|(_, s)| !positive_only || *s > 0.0).map(|(i, s)| (i as i64, s)).collect()
}

/// lr_search's mode for a fusion weight: 1 and 0 are one side alone.
fn mode_of(w: f32) -> lr_search::Mode {
    if w == 1.0 {
        lr_search::Mode::Dense
    } else if w == 0.0 {
        lr_search::Mode::Sparse
    } else {
        lr_search::Mode::Hybrid
    }
}

/// Hybrid settings judged on the fit's held-out pseudo-queries (spans of held-out documents;
/// relevance = the source document), then the same settings on the collection's judged
/// queries. The first table is the one to choose by; the second is printed for the record.
#[allow(clippy::too_many_arguments)]
fn hybrid_study(
    sparse: &SparseSide,
    fitted: &lr_fit::FittedTable,
    fitted_enc: &LookupEncoder,
    cached: &CachedEncoder,
    doc_vectors: &[Vec<f32>],
    coll: &Collection,
    doc_ids: &[String],
    fitted_queries: &[Vec<f32>],
    full_queries: &[Vec<f32>],
) -> Result<(), String> {
    let weights = [1.0f32, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.0];
    let header = weights.iter().map(|w| format!("w={w}")).collect::<Vec<_>>().join(" | ");
    let sparse_name = |weighted: bool| if weighted { "idf·count" } else { "count" };
    // Per (dense side, sparse weighting): each query's two candidate lists, built once and
    // fused at every weight (best `k`), then `score`d per weight.
    let table = |texts: &[&str], dense_scores: &[(&str, Vec<Vec<f32>>)], k: usize, score: &dyn Fn(&[Vec<lr_search::Hit>]) -> f64| {
        for (dense_name, dense_s) in dense_scores {
            for weighted in [false, true] {
                let mut fused: Vec<Vec<Vec<lr_search::Hit>>> = vec![Vec::new(); weights.len()];
                for (qi, text) in texts.iter().enumerate() {
                    let d = candidates(&dense_s[qi], false);
                    let s = sparse.candidates(text, weighted)?;
                    for (wi, &w) in weights.iter().enumerate() {
                        fused[wi].push(lr_search::fuse(&d, &s, mode_of(w), w, k));
                    }
                }
                let row: Vec<String> = fused.iter().map(|hits| format!("{:.4}", score(hits))).collect();
                println!("| {dense_name} | {} | {} |", sparse_name(weighted), row.join(" | "));
            }
        }
        Ok::<(), String>(())
    };

    // Pseudo-queries.
    let held = &fitted.held_out_queries;
    let texts: Vec<&str> = held.iter().map(|(_, t)| t.as_str()).collect();
    let lookup_q = lookup_queries(fitted_enc, &held.iter().map(|(d, t)| (d.to_string(), t.clone())).collect::<Vec<_>>(), doc_vectors[0].len());
    let dense = [
        ("fitted lookup", search::dense_scores(&lookup_q, doc_vectors)?),
        ("full", search::dense_scores(&cached.encode(&texts)?, doc_vectors)?),
    ];
    println!("\nhybrid study: {} held-out pseudo-queries, known-item MRR@10 (choose here)", held.len());
    println!("| dense side | sparse query | {header} |");
    table(&texts, &dense, 10, &|hits| {
        let ranks = hits.iter().zip(held).map(|(h, (src, _))| reciprocal_rank(&h.iter().map(|x| x.id).collect::<Vec<_>>(), *src));
        ranks.sum::<f64>() / held.len() as f64
    })?;

    // The collection's judged queries, for the record.
    let texts: Vec<&str> = coll.queries.iter().map(|(_, q)| q.as_str()).collect();
    let dense = [
        ("fitted lookup", search::dense_scores(fitted_queries, doc_vectors)?),
        ("full", search::dense_scores(full_queries, doc_vectors)?),
    ];
    println!("\nhybrid study: {} judged queries, nDCG@10 (record only)", coll.queries.len());
    println!("| dense side | sparse query | {header} |");
    table(&texts, &dense, 1000, &|hits| {
        let run: Run = coll
            .queries
            .iter()
            .zip(hits)
            .map(|((qid, _), h)| (qid.clone(), h.iter().map(|x| (doc_ids[x.id as usize].clone(), x.score)).collect()))
            .collect();
        evaluate(&run, &coll.qrels).ndcg_at_10
    })?;
    Ok(())
}

fn write_f32(path: &Path, rows: impl IntoIterator<Item = f32>) -> Result<(), String> {
    let bytes: Vec<u8> = rows.into_iter().flat_map(f32::to_le_bytes).collect();
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Pseudo-query pairs of one form for `--dump`: the rests (each query's only relevant text)
/// through the dense document model (`{form}_rest_dense.f32`), the queries through it too
/// (`{form}_full.f32`, the full-query reference); returns the rests' sparse vectors for meta.json.
fn dump_pairs(
    dir: &Path,
    form: &str,
    queries: &[&str],
    rests: &[&str],
    args: &Args,
    sparse: &SparseSide,
    cached: &CachedEncoder,
) -> Result<Vec<Vec<(u32, f32)>>, String> {
    let mut rest_dense = Vec::new();
    for chunk in rests.chunks(64) {
        rest_dense.extend(cached.encode(chunk)?);
    }
    write_f32(&dir.join(format!("{form}_rest_dense.f32")), rest_dense.iter().flatten().copied())?;
    write_f32(&dir.join(format!("{form}_full.f32")), cached.encode(queries)?.iter().flatten().copied())?;
    cached.save();
    sparse.encode_cached(rests, args.cache_dir.as_deref())
}

/// Everything a study outside Rust needs, so that it ranks exactly what the extension would:
/// the documents' dense and sparse vectors, the fitted table and its weights, the sparse query
/// weights, and per query set (the fit's held-out pseudo-queries, the judged queries) the texts
/// with their lookup and full-model vectors.
#[allow(clippy::too_many_arguments)]
fn dump(
    dir: &Path,
    args: &Args,
    doc_refs: &[&str],
    coll: &Collection,
    doc_ids: &[String],
    doc_vectors: &[Vec<f32>],
    full_queries: &[Vec<f32>],
    fitted: &lr_fit::FittedTable,
    fitted_queries: &[Vec<f32>],
    sparse: &SparseSide,
    cached: &CachedEncoder,
    dims: usize,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_f32(&dir.join("doc_dense.f32"), doc_vectors.iter().flatten().copied())?;
    write_f32(&dir.join("table_rows.f32"), fitted.rows.iter().copied())?;
    write_f32(&dir.join("table_weights.f32"), fitted.weights.iter().flatten().copied())?;
    write_f32(&dir.join("sparse_idf.f32"), sparse.weights.iter().copied())?;
    write_f32(&dir.join("query_full.f32"), full_queries.iter().flatten().copied())?;
    write_f32(&dir.join("query_lookup.f32"), fitted_queries.iter().flatten().copied())?;
    let held = &fitted.held_out_queries;
    let held_texts: Vec<&str> = held.iter().map(|(_, t)| t.as_str()).collect();
    write_f32(&dir.join("held_full.f32"), cached.encode(&held_texts)?.iter().flatten().copied())?;
    // Inverse-cloze pseudo-queries of the held-out documents: the rest of each document is
    // encoded by both document models, as a table row of its own would be.
    let mut held_docs: Vec<usize> = held.iter().map(|(d, _)| *d).collect();
    held_docs.sort_unstable();
    held_docs.dedup();
    let cloze = lr_fit::cloze_pairs(doc_refs, &held_docs, 4, 6, 16, 42);
    let rests: Vec<&str> = cloze.iter().map(|c| c.rest.as_str()).collect();
    let queries: Vec<&str> = cloze.iter().map(|c| c.query.as_str()).collect();
    eprintln!("encoding {} inverse-cloze pairs", cloze.len());
    let rest_sparse = dump_pairs(dir, "cloze", &queries, &rests, args, sparse, cached)?;
    // Title pseudo-queries of the held-out documents that have a title: the title as the query,
    // the document without it (its text) as the only relevant text, encoded by both document
    // models. Titles are short and written by people, as queries are.
    let titled: Vec<(usize, &str, &str)> = held_docs
        .iter()
        .map(|&d| (d, coll.docs[d].title.trim(), coll.docs[d].text.trim()))
        .filter(|(_, title, text)| !title.is_empty() && !text.is_empty())
        .collect();
    let title_pairs: Vec<serde_json::Value> =
        titled.iter().map(|(d, title, _)| serde_json::json!({"doc": d, "query": title})).collect();
    let titles: Vec<&str> = titled.iter().map(|t| t.1).collect();
    let bodies: Vec<&str> = titled.iter().map(|t| t.2).collect();
    eprintln!("encoding {} title pseudo-queries' documents", titled.len());
    let body_sparse = dump_pairs(dir, "title", &titles, &bodies, args, sparse, cached)?;
    // Inverse-cloze pairs of the training documents (never of the held-out ones), sparse side
    // only: training material for sparse query weights.
    let train_docs: Vec<usize> = (0..doc_refs.len()).filter(|d| held_docs.binary_search(d).is_err()).collect();
    let cloze_train = lr_fit::cloze_pairs(doc_refs, &train_docs, 2, 6, 16, 43);
    let train_rests: Vec<&str> = cloze_train.iter().map(|c| c.rest.as_str()).collect();
    eprintln!("encoding {} training inverse-cloze rests (sparse)", cloze_train.len());
    let train_rest_sparse = sparse.encode_cached(&train_rests, args.cache_dir.as_deref())?;
    let meta = serde_json::json!({
        "cloze_train": cloze_train,
        "cloze_train_rest_sparse": train_rest_sparse,
        "cloze": cloze,
        "cloze_rest_sparse": rest_sparse,
        "title": title_pairs,
        "title_rest_sparse": body_sparse,
        "dims": dims,
        "doc_ids": doc_ids,
        "doc_sparse": sparse.docs,
        "held_out": held,
        "queries": coll.queries,
        "qrels": coll.qrels,
        "fit_options": args.fit_options,
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).map_err(|e| e.to_string())
}
