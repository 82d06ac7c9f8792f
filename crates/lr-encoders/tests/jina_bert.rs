//! JinaBERT (jina-embeddings-v2 layout, PE-Rank's passage encoder) against the independent numpy
//! reference (tests/rerank_reference/README.md, `reference/jina-bert-tiny.json`): token ids,
//! hidden states at every position, pooled vectors, padded batches, and the PE-Rank passage
//! embeddings the reranker reference was built from.

use std::path::PathBuf;

use candle_core::Tensor;
use lr_encoders::{BertEncoder, DocumentEncoder, SparseEncoder};
use lr_model::{BertBackbone, BertStack, BertVariant, Device, ModelFamily, ModelInfo, ModelOptions, Pooling};
use lr_testkit::*;
use serde_json::Value;

/// The existing reference tests' tolerance (absolute, per element).
const TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    tiny_models_dir().join("jina-bert-tiny")
}

fn info() -> ModelInfo {
    ModelInfo::inspect(&dir(), &ModelOptions::default()).unwrap()
}

fn reference() -> Value {
    tiny_reference("jina-bert-tiny")
}

fn texts(r: &Value) -> Vec<&str> {
    r["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect()
}

fn worst(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
}

/// Reference hidden states of text `i`: [T][H] flattened.
fn want_hidden(r: &Value, i: usize) -> Vec<f32> {
    r["hidden"][i].as_array().unwrap().iter().flat_map(floats).collect()
}

/// Row `row` of hidden states [b, t, H], its first `len` positions, flattened.
fn got_hidden(hidden: &Tensor, row: usize, len: usize) -> Vec<f32> {
    let rows: Vec<Vec<f32>> = hidden.get(row).unwrap().narrow(0, 0, len).unwrap().to_vec2().unwrap();
    rows.concat()
}

#[test]
fn the_checkpoint_is_a_bert_family_encoder_on_the_jina_stack() {
    let info = info();
    assert_eq!(info.family, ModelFamily::Bert);
    assert_eq!(info.architecture, "JinaBertForMaskedLM");
    assert_eq!((info.hidden_size, info.vocab_size), (32, 501));
    assert_eq!(info.max_length, 512, "sentence_bert_config.json's max_seq_length");
    assert_eq!(info.pooling, Pooling::Mean, "1_Pooling/config.json");
    assert!(!info.has_lm_head, "sparse encoding is not offered on JinaBERT");
    assert_eq!(BertVariant::read(&info.path).unwrap(), BertVariant::Jina);
    assert_eq!(BertBackbone::load(&info, &Device::Cpu).unwrap().variant(), BertVariant::Jina);
    assert_eq!(BertVariant::read(&dense_model_dir()).unwrap(), BertVariant::Classic);
    // A JinaBERT stack takes no instruction, like any BERT-family encoder.
    let enc = DocumentEncoder::load(&info, &Device::Cpu).unwrap();
    assert_eq!(enc.table_input(None), "[CLS] id [SEP]");
    assert_eq!(enc.dim(), 32);
}

#[test]
fn token_ids_match_reference() {
    let r = reference();
    let enc = BertEncoder::load(&info(), &Device::Cpu).unwrap();
    for (i, text) in texts(&r).into_iter().enumerate() {
        assert_eq!(enc.document_ids(text).unwrap(), ids(&r["input_ids"][i]), "token ids of {text:.40?}");
    }
}

#[test]
fn hidden_states_match_reference_alone_and_padded() {
    let r = reference();
    let backbone = BertBackbone::load(&info(), &Device::Cpu).unwrap();
    let seqs: Vec<Vec<u32>> = r["input_ids"].as_array().unwrap().iter().map(ids).collect();
    let mut worst_alone = 0f32;
    for (i, s) in seqs.iter().enumerate() {
        let (hidden, _) = backbone.forward_padded(&[s]).unwrap();
        let (got, want) = (got_hidden(&hidden, 0, s.len()), want_hidden(&r, i));
        let w = worst(&got, &want);
        assert!(w <= TOLERANCE, "text {i} alone: hidden max |diff| {w}");
        worst_alone = worst_alone.max(w);
    }

    // The reference's padded batch, run as given (ids and mask) on the stack.
    let padded: Vec<Vec<u32>> = r["padded_input_ids"].as_array().unwrap().iter().map(ids).collect();
    let mask: Vec<Vec<u32>> = r["padded_attention_mask"].as_array().unwrap().iter().map(ids).collect();
    let (b, t) = (padded.len(), padded[0].len());
    let BertStack::Jina(model) = &backbone.stack else { panic!("not the JinaBERT stack") };
    let hidden = model
        .forward(
            &Tensor::from_vec(padded.concat(), (b, t), &Device::Cpu).unwrap(),
            &Tensor::from_vec(mask.concat(), (b, t), &Device::Cpu).unwrap(),
        )
        .unwrap();
    let mut worst_padded = 0f32;
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(mask[i].iter().sum::<u32>() as usize, s.len());
        assert_eq!(&padded[i][..s.len()], s.as_slice());
        let w = worst(&got_hidden(&hidden, i, s.len()), &want_hidden(&r, i));
        assert!(w <= TOLERANCE, "text {i} in the padded batch: hidden max |diff| {w}");
        worst_padded = worst_padded.max(w);
    }
    // And the backbone's own padding (what the encoders run) gives the same states.
    let group: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let (ours, _) = backbone.forward_padded(&group).unwrap();
    for (i, s) in seqs.iter().enumerate() {
        assert_within(&got_hidden(&ours, i, s.len()), &got_hidden(&hidden, i, s.len()), 1e-6, "forward_padded");
    }
    eprintln!("JinaBERT hidden states vs reference: max |diff| {worst_alone:e} alone, {worst_padded:e} padded");
}

#[test]
fn pooled_vectors_match_reference_batched_and_one_at_a_time() {
    let r = reference();
    let texts = texts(&r);
    let enc = BertEncoder::load(&info(), &Device::Cpu).unwrap();
    let batched = enc.encode(&texts).unwrap(); // one padded batch of all five
    let mut worst_pooled = 0f32;
    for (i, text) in texts.iter().enumerate() {
        let want = floats(&r["pooled"][i]);
        let single = enc.encode(&[text]).unwrap().remove(0);
        assert_matches(&batched[i], &want, &format!("batched {text:.40?}"));
        assert_matches(&single, &want, &format!("alone {text:.40?}"));
        assert_within(&batched[i], &single, 1e-6, &format!("batched vs alone {text:.40?}"));
        worst_pooled = worst_pooled.max(worst(&batched[i], &want)).max(worst(&single, &want));
    }
    // The family dispatch runs the same encoder.
    let dispatched = DocumentEncoder::load(&info(), &Device::Cpu).unwrap().encode(&texts).unwrap();
    assert_eq!(dispatched, batched);
    eprintln!("JinaBERT pooled vectors vs reference: max |diff| {worst_pooled:e}");
}

#[test]
fn pe_rank_passage_embeddings_are_these_vectors() {
    let r = tiny_reference("pe-rank-tiny");
    let enc = BertEncoder::load(&info(), &Device::Cpu).unwrap();
    let cases: Vec<&Value> =
        r["cases"].as_array().unwrap().iter().filter(|c| c["embedding_source"] == "jina-bert-tiny").collect();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let passages: Vec<&str> = c["passages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let got = enc.encode(&passages).unwrap();
        for (i, (g, e)) in got.iter().zip(c["embeddings"].as_array().unwrap()).enumerate() {
            assert_matches(g, &floats(e), &format!("{} passage {i}", c["name"]));
        }
    }
}

#[test]
fn sparse_encoding_is_refused_clearly() {
    let e = SparseEncoder::load(&info(), &Device::Cpu).err().expect("JinaBERT has no sparse encoder").to_string();
    assert!(e.contains("is JinaBERT") && e.contains("dense vectors only"), "{e}");
}

#[test]
fn unsupported_jina_variants_are_named_at_registration() {
    let d = temp_dir("lr-jina", "reglu");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(dir().join(f), d.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"geglu\"", "\"reglu\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let e = ModelInfo::inspect(&d, &ModelOptions::default()).unwrap_err().to_string();
    assert!(e.contains("feed_forward_type \"reglu\" is not supported (geglu is)"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}
