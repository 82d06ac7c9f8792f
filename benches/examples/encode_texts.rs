//! Our in-process encoders, for `make bench-encode` (benches/encode_side_by_side.py runs this
//! between ONNX Runtime's runs). Loads the model once, encodes `--reps` times (batch 32
//! length-sorted, as the worker does, unless `--batch`) and writes the wall time of each rep,
//! the token count and the vectors of the last rep.
//!
//! encode_texts --model DIR --kind dense|sparse --texts FILE.json --reps N --out FILE.json
//!              [--vectors FILE.f32] [--batch N] [--kernels native|candle]
//! encode_texts --model DIR --kind decoder --doc-tokens T --docs D --batch B --reps N --out FILE.json
//!              (a decoder LLM's dense vectors of D synthetic id sequences of T tokens)
//! encode_texts --peak --out FILE.json   (the cores' f32 FMA rate: the machine's peak)
//!
//! texts: a JSON array of strings. vectors: little-endian f32, one row per text (sparse vectors
//! densified over the vocabulary). out: {"seconds": [...], "docs": n, "tokens": t, "dim": d,
//! "gemm": "onednn"|"gemm-crate", "threads": n}.

use std::time::Instant;

use lr_encoders::encoders::FamilyEncoder;
use lr_encoders::{DocumentEncoder, LlmEncoder, SparseDocumentEncoder};
use lr_model::{Device, Kernels, ModelInfo, ModelOptions};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Token ids of one document as the model sees it (special tokens, truncation).
fn dense_ids(enc: &DocumentEncoder, text: &str) -> usize {
    match enc {
        FamilyEncoder::Bert(e) => e.document_ids(text).unwrap().len(),
        FamilyEncoder::Llm(e) => e.document_ids(text).unwrap().len(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |n: &str| arg(&args, n).unwrap_or_else(|| panic!("{n} is required"));
    let threads = rayon::current_num_threads();
    if args.iter().any(|a| a == "--peak") {
        let gflops = peak::gflops();
        let out = serde_json::json!({"gflops": gflops, "threads": threads, "isa": peak::isa(),
                                     "sgemm_gflops": peak::sgemm(2048), "gemm": lr_model::dnnl::backend()});
        std::fs::write(need("--out"), out.to_string()).unwrap();
        return;
    }
    let model = need("--model");
    let kind = need("--kind");
    let kernels = match arg(&args, "--kernels").as_deref() {
        None | Some("native") => Kernels::Native,
        Some("candle") => Kernels::Candle,
        Some(other) => panic!("--kernels {other}: native or candle"),
    };
    let batch: Option<usize> = arg(&args, "--batch").map(|b| b.parse().unwrap());
    let reps: usize = arg(&args, "--reps").map_or(1, |r| r.parse().unwrap());
    let info = ModelInfo::inspect(std::path::Path::new(&model), &ModelOptions::default()).unwrap();

    let mut seconds = Vec::new();
    let docs: usize;
    let (rows, dim, tokens): (Vec<Vec<f32>>, usize, usize) = match kind.as_str() {
        "decoder" => {
            let enc = LlmEncoder::load_with(&info, &Device::Cpu, kernels).unwrap();
            let n_tokens: usize = need("--doc-tokens").parse().unwrap();
            docs = need("--docs").parse::<usize>().unwrap();
            let config = enc.decoder().config();
            let (vocab, eos) = (config.vocab_size as u32, config.eos_token_id.unwrap());
            // Deterministic pseudo-random content ids between bos and eos.
            let seqs: Vec<Vec<u32>> = (0..docs as u32)
                .map(|seed| {
                    let mut ids = vec![config.bos_token_id.unwrap_or(0)];
                    ids.extend((0..n_tokens as u32 - 2).map(|i| (seed.wrapping_mul(7919).wrapping_add(i * 104_729)) % (vocab - 1000) + 500));
                    ids.push(eos);
                    ids
                })
                .collect();
            let batch = batch.unwrap_or(8);
            let mut rows = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                rows = enc.encode_id_sequences(&seqs, batch).unwrap();
                seconds.push(t.elapsed().as_secs_f64());
            }
            (rows, enc.dim(), docs * n_tokens)
        }
        "dense" | "sparse" => {
            let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(need("--texts")).unwrap()).unwrap();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            docs = texts.len();
            if kind == "dense" {
                let enc = DocumentEncoder::load_with(&info, &Device::Cpu, kernels).unwrap();
                let tokens = refs.iter().map(|t| dense_ids(&enc, t)).sum();
                let mut rows = Vec::new();
                for _ in 0..reps {
                    let t = Instant::now();
                    rows = match batch {
                        Some(b) => enc.encode_document_ids(&refs, b).unwrap(),
                        None => enc.encode(&refs).unwrap(),
                    };
                    seconds.push(t.elapsed().as_secs_f64());
                }
                let dim = rows.first().map_or(0, Vec::len);
                (rows, dim, tokens)
            } else {
                let enc = SparseDocumentEncoder::load_with(&info, &Device::Cpu, kernels).unwrap();
                let tokens = match &enc {
                    FamilyEncoder::Bert(e) => refs.iter().map(|t| e.document_ids(t).unwrap().len()).sum(),
                    FamilyEncoder::Llm(e) => refs.iter().map(|t| e.document_ids(t).unwrap().len()).sum(),
                };
                let mut sparse = Vec::new();
                for _ in 0..reps {
                    let t = Instant::now();
                    sparse = enc.encode(&refs).unwrap();
                    seconds.push(t.elapsed().as_secs_f64());
                }
                let dim = info.vocab_size;
                let rows = sparse
                    .iter()
                    .map(|v| {
                        let mut row = vec![0f32; dim];
                        v.iter().for_each(|&(i, w)| row[i as usize] = w);
                        row
                    })
                    .collect();
                (rows, dim, tokens)
            }
        }
        other => panic!("--kind {other}: dense, sparse or decoder"),
    };
    if let Some(path) = arg(&args, "--vectors") {
        let bytes: Vec<u8> = rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).unwrap();
    }
    let out = serde_json::json!({"seconds": seconds, "docs": docs, "tokens": tokens, "dim": dim,
                                 "gemm": lr_model::dnnl::backend(), "threads": threads});
    std::fs::write(need("--out"), out.to_string()).unwrap();
}

/// The f32 FMA rate of every core at once: independent multiply-add chains in the widest
/// vectors the CPU has (12 accumulators hide the FMA latency), one chain set per rayon thread.
mod peak {
    use std::time::Instant;

    pub fn isa() -> &'static str {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return "avx512f";
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return "avx2+fma";
            }
        }
        "baseline"
    }

    const ACCUMULATORS: usize = 12;

    /// `iters` rounds of 12 independent FMA chains in 512-bit vectors: (FLOPs, a sum that keeps
    /// them from being optimised away).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn chains512(iters: usize) -> (f64, f32) {
        use std::arch::x86_64::*;
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        let (a, b) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        ((iters * ACCUMULATORS * 16 * 2) as f64, acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum())
    }

    /// The same in 256-bit vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chains256(iters: usize) -> (f64, f32) {
        use std::arch::x86_64::*;
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        let (a, b) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(0.999_999_9));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let mut sum = 0.0;
        for x in acc {
            _mm256_storeu_ps(lanes.as_mut_ptr(), x);
            sum += lanes.iter().sum::<f32>();
        }
        ((iters * ACCUMULATORS * 8 * 2) as f64, sum)
    }

    fn one_thread(iters: usize) -> (f64, f32) {
        #[cfg(target_arch = "x86_64")]
        {
            // Safety: each copy runs only where the CPU has its features.
            match isa() {
                "avx512f" => return unsafe { chains512(iters) },
                "avx2+fma" => return unsafe { chains256(iters) },
                _ => {}
            }
        }
        let mut acc = [0f32; ACCUMULATORS];
        for _ in 0..iters {
            acc.iter_mut().for_each(|x| *x = *x * 1.000_000_1 + 0.999_999_9);
        }
        ((iters * ACCUMULATORS * 2) as f64, acc.iter().sum())
    }

    /// Our CPU GEMM (`lr_model::kernels::gemm`, as the native forwards call it) on n×n×n, all
    /// threads: best of 5, in GFLOP/s.
    pub fn sgemm(n: usize) -> f64 {
        use lr_model::kernels::{gemm, Strided};
        let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut c = vec![0f32; n * n];
        (0..5)
            .map(|_| {
                let t = Instant::now();
                // Safety: three n×n row-major buffers, `c` distinct from `a` and `b`.
                unsafe { gemm(n, n, n, c.as_mut_ptr(), n, false, Strided::rows(&a, n), Strided::rows(&b, n), 1.0, true) };
                2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    }

    /// Best of 5 runs of all threads at once, in GFLOP/s.
    pub fn gflops() -> f64 {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads();
        let iters = 50_000_000;
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let flops: f64 = (0..threads).into_par_iter().map(|_| one_thread(iters)).map(|(f, s)| f + (s * 0.0) as f64).sum();
                flops / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    }
}
