//! The decoder LLMs against an independent numpy forward (tests/decoder_reference/reference.py,
//! written from the papers and Hugging Face's conventions, not from this crate): every family,
//! f32/bf16/f16, sharded weights, tied and untied heads, a merged LoRA adapter; padded batches
//! on both sides, the KV cache, table rows behind a prompt, LM-head sparse weights.

use candle_core::{IndexOp, Tensor};
use lr_model::{Device, ModelInfo, ModelOptions, PaddingSide};
use lr_encoders::LlmEncoder;
use lr_testkit::{tiny_models_dir, tiny_reference};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

/// (reference name, model directory, adapter directory)
const MODELS: [(&str, &str, Option<&str>); 5] = [
    ("tiny-llama", "tiny-llama", None),
    ("tiny-mistral", "tiny-mistral", None),
    ("tiny-qwen2", "tiny-qwen2", None),
    ("tiny-qwen3", "tiny-qwen3", None),
    ("tiny-llama+lora", "tiny-llama", Some("tiny-llama-lora")),
];

fn load(dir: &str, adapter: Option<&str>) -> LlmEncoder {
    let root = tiny_models_dir();
    let options = ModelOptions { adapter: adapter.map(|a| root.join(a).to_string_lossy().into_owned()), ..Default::default() };
    let info = ModelInfo::inspect(&root.join(dir), &options).unwrap();
    LlmEncoder::load(&info, &Device::Cpu).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    lr_testkit::assert_within(got, want, TOLERANCE, what);
}

#[test]
fn hidden_states_match_the_reference_in_padded_batches_on_both_sides() {
    for (name, dir, adapter) in MODELS {
        let r = tiny_reference(name);
        let enc = load(dir, adapter);
        let seqs: Vec<Vec<u32>> = r["sequences"].as_array().unwrap().iter().map(ids).collect();
        let group: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        for side in [PaddingSide::Left, PaddingSide::Right] {
            let (hidden, real) = enc.decoder().forward_sequences(&group, side).unwrap();
            for (s, seq) in seqs.iter().enumerate() {
                let columns: Vec<usize> = (0..real[s].len()).filter(|&c| real[s][c]).collect();
                assert_eq!(columns.len(), seq.len());
                for (p, &c) in columns.iter().enumerate() {
                    let got: Vec<f32> = hidden.i((s, c)).unwrap().to_vec1().unwrap();
                    assert_close(&got, &floats(&r["hidden"][s][p]), &format!("{name} {side:?} seq {s} pos {p}"));
                }
                let last = hidden.i((s, *columns.last().unwrap())).unwrap().unsqueeze(0).unwrap();
                let logits: Vec<f32> = enc.decoder().logits(&last).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
                assert_close(&logits, &floats(&r["logits_last"][s]), &format!("{name} logits seq {s}"));
            }
        }
    }
}

#[test]
fn pooled_documents_match_the_reference() {
    for (name, dir, adapter) in MODELS {
        let r = tiny_reference(name);
        let enc = load(dir, adapter);
        let seqs: Vec<Vec<u32>> = r["sequences"].as_array().unwrap().iter().map(ids).collect();
        // Batch 2 mixes lengths inside a batch and across batches.
        let pooled = enc.encode_id_sequences(&seqs, 2).unwrap();
        for (s, v) in pooled.iter().enumerate() {
            assert_close(v, &floats(&r["pooled"][s]), &format!("{name} pooled {s}"));
        }
    }
}

#[test]
fn sparse_weights_match_the_reference() {
    for (name, dir, adapter) in MODELS {
        let r = tiny_reference(name);
        let enc = load(dir, adapter);
        let seqs: Vec<Vec<u32>> = r["sequences"].as_array().unwrap().iter().map(ids).collect();
        let sparse = enc.encode_sparse_ids(&seqs, None).unwrap();
        for (s, got) in sparse.iter().enumerate() {
            let want = lr_testkit::id_weights(&r["sparse"][s]);
            let got_ids: Vec<u32> = got.iter().map(|p| p.0).collect();
            let want_ids: Vec<u32> = want.iter().map(|p| p.0).collect();
            assert_eq!(got_ids, want_ids, "{name} sparse ids of seq {s}");
            let gw: Vec<f32> = got.iter().map(|p| p.1).collect();
            let ww: Vec<f32> = want.iter().map(|p| p.1).collect();
            assert_close(&gw, &ww, &format!("{name} sparse weights {s}"));
        }
        // Pruning keeps the largest weights of the same vector.
        let top = enc.encode_sparse_ids(&seqs[4..], Some(10)).unwrap().pop().unwrap();
        let mut all = sparse[4].clone();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut expected: Vec<u32> = all.iter().take(10).map(|p| p.0).collect();
        expected.sort();
        assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), expected, "{name} top-10");
    }
}

#[test]
fn table_rows_behind_a_prompt_match_the_reference() {
    for (name, dir, adapter) in MODELS {
        let r = tiny_reference(name);
        let enc = load(dir, adapter);
        let mut prefix = vec![r["bos_id"].as_u64().unwrap() as u32];
        prefix.extend(ids(&r["table_prompt_ids"]));
        let rows = enc.token_table_rows(&prefix, &ids(&r["table_ids"])).unwrap();
        for (i, row) in rows.iter().enumerate() {
            assert_close(row, &floats(&r["table_rows"][i]), &format!("{name} table row {i}"));
        }
    }
}

#[test]
fn one_token_at_a_time_with_the_cache_equals_one_pass() {
    let r = tiny_reference("tiny-qwen3");
    let enc = load("tiny-qwen3", None);
    let model = enc.decoder();
    let seq = ids(&r["sequences"][3]);
    let mut cache = model.new_cache(1);
    for (p, &id) in seq.iter().enumerate() {
        let x = model.embed(&Tensor::new(&[[id]], model.device()).unwrap()).unwrap();
        let h = model.forward(&x, &[vec![true]], &mut cache).unwrap();
        let got: Vec<f32> = h.i((0, 0)).unwrap().to_vec1().unwrap();
        assert_close(&got, &floats(&r["hidden"][3][p]), &format!("step {p}"));
    }
    assert_eq!(cache.len(), seq.len());
}

#[test]
fn documents_are_wrapped_in_bos_and_eos_and_the_adapter_tokenizer_lowercases() {
    let base = load("tiny-llama", None);
    let tuned = load("tiny-llama", Some("tiny-llama-lora"));
    let b = base.document_ids("The capital of France is Paris").unwrap();
    let t = tuned.document_ids("The capital of France is Paris").unwrap();
    assert_eq!((b[0], *b.last().unwrap()), (1, 2));
    assert_eq!(b.len(), t.len());
    assert_ne!(b, t, "the adapter's lowercasing tokenizer must win");
    assert_eq!(t, tuned.document_ids("the capital of france is paris").unwrap());
    // Truncation keeps bos and eos: 512 tokens at most.
    let long = "word ".repeat(2000);
    let ids = base.document_ids(&long).unwrap();
    assert_eq!(ids.len(), 512);
    assert_eq!((ids[0], ids[511]), (1, 2));
    // The text path and the id path agree.
    let v = base.encode(&["The capital of France is Paris"]).unwrap();
    assert_eq!(v, base.encode_id_sequences(&[b], 1).unwrap());
}
