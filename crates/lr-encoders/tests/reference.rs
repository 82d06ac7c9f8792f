//! The real all-MiniLM-L6-v2 against vectors from an independent implementation
//! (../shared/reference/minilm.json): documents, table rows, lookup queries.


use lr_testkit::*;
use lr_model::{Device, ModelInfo, ModelOptions, Pooling};
use lr_encoders::BertEncoder;
use lr_table::{Dtype, LookupEncoder, QueryTable, TableMeta, TableWriter};

fn encoder() -> BertEncoder {
    let info = ModelInfo::inspect(&dense_model_dir(), &ModelOptions::default()).unwrap();
    assert_eq!((info.hidden_size, info.vocab_size, info.max_length), (384, 30522, 256));
    assert_eq!(info.pooling, Pooling::Mean);
    BertEncoder::load(&info, &Device::Cpu).unwrap()
}

#[test]
fn documents_match_reference() {
    let r = reference();
    let enc = encoder();
    let sentences = r["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&""), "the reference covers the empty string");
    let batch = enc.encode(&texts).unwrap();
    for (s, got) in sentences.iter().zip(&batch) {
        let text = s["text"].as_str().unwrap();
        assert_eq!(enc.document_ids(text).unwrap(), ids(&s["token_ids"]), "token ids of {text:?}");
        assert_matches(got, &floats(&s["embedding"]), &format!("batched {text:.40?}"));
        // Alone (no padding) must agree with batched (padded) too.
        let single = enc.encode(&[text]).unwrap();
        assert_matches(&single[0], &floats(&s["embedding"]), &format!("single {text:.40?}"));
    }
    let longest = sentences.iter().map(|s| s["token_ids"].as_array().unwrap().len()).max().unwrap();
    assert_eq!(longest, 256, "the >256-token sentence is truncated to the model's 256");
}

#[test]
fn table_rows_match_reference() {
    let r = reference();
    let enc = encoder();
    let rows = r["table_rows"]["rows"].as_object().unwrap();
    let ids: Vec<u32> = rows.keys().map(|k| k.parse().unwrap()).collect();
    let got = enc.token_table_rows(&ids).unwrap();
    for (id, g) in ids.iter().zip(&got) {
        assert_matches(g, &floats(&rows[&id.to_string()]), &format!("table row {id}"));
    }
}

#[test]
fn lookup_queries_match_reference() {
    let r = reference();
    let enc = encoder();
    let queries = r["lookup_queries"].as_array().unwrap();
    // Rows for the queries' ids only (others zero): the lookup arithmetic is what is under test.
    let mut needed: Vec<u32> = queries.iter().flat_map(|q| ids(&q["token_ids"])).collect();
    needed.sort();
    needed.dedup();
    let rows = enc.token_table_rows(&needed).unwrap();
    let vocab = enc.info().vocab_size;
    let mut all = vec![0f32; vocab * 384];
    for (id, row) in needed.iter().zip(&rows) {
        all[*id as usize * 384..(*id as usize + 1) * 384].copy_from_slice(row);
    }
    let dir = std::env::temp_dir().join(format!("lr-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("minilm.lrt");
    let meta = TableMeta {
        model: "all-minilm-l6-v2".into(),
        instruction: None,
        tokenizer_fingerprint: String::new(),
        build: serde_json::Value::Null,
    };
    let mut w = TableWriter::create(&path, &meta, vocab as u64, 384, Dtype::F32).unwrap();
    w.write_rows(&all).unwrap();
    w.finish().unwrap();
    let tok = lr_tokenizer::load_tokenizer(&dense_model_dir().join("tokenizer.json"), None).unwrap();
    let lookup = LookupEncoder::new(QueryTable::open(&path).unwrap(), tok);
    for q in queries {
        let text = q["text"].as_str().unwrap();
        assert_eq!(lookup.token_ids(text).unwrap(), ids(&q["token_ids"]), "ids of {text:?}");
        if q["embedding"].is_null() {
            // The reference has no vector for a query without tokens: it must be an error.
            assert!(matches!(lookup.encode(text), Err(lr_table::LookupError::NoTokens)), "{text:?}");
        } else {
            assert_matches(&lookup.encode(text).unwrap(), &floats(&q["embedding"]), text);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
