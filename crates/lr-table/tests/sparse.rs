//! The sparse query encoder against the independent SPLADE-tiny reference's token ids (Hugging
//! Face in Python, `tests/reference/splade_reference.py`): counts of the ids without special
//! tokens, weighted by fitted weights; the 512-token cut; the no-token error.

use std::collections::BTreeMap;

use lr_table::{LookupError, SparseQueryEncoder, MAX_QUERY_TOKENS};
use lr_testkit::{sparse_model_dir, sparse_reference};

fn encoder() -> SparseQueryEncoder {
    SparseQueryEncoder::new(lr_tokenizer::load_tokenizer(&sparse_model_dir().join("tokenizer.json"), None).unwrap())
}

/// Counts of `ids`, ascending, computed here without lr-tokenizer.
fn counts(ids: &[u32]) -> Vec<(u32, f32)> {
    let mut m = BTreeMap::new();
    ids.iter().for_each(|id| *m.entry(*id).or_insert(0.0f32) += 1.0);
    m.into_iter().collect()
}

fn no_weights() -> Option<Vec<f32>> {
    None
}

#[test]
fn counts_match_the_reference_token_ids() {
    let enc = encoder();
    let r = sparse_reference();
    let mut checked = 0;
    for case in r["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        // The reference is a document encoding: [CLS] … [SEP], cut at the model's 512 positions.
        let (cls, sep) = (ids[0], ids[ids.len() - 1]);
        assert_eq!((cls, sep), (101, 102), "{text:.40?}");
        let content = &ids[1..ids.len() - 1];
        if content.is_empty() {
            assert_eq!(enc.encode(text, no_weights), Err(LookupError::NoTokens), "{text:?}");
            continue;
        }
        if ids.len() == 512 {
            continue; // cut by the document side at 510 content ids; the query side keeps 512
        }
        assert_eq!(enc.encode(text, no_weights).unwrap(), counts(content), "{text:.60?}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} reference texts checked");
}

#[test]
fn weights_multiply_counts_and_ids_past_them_keep_their_count() {
    let enc = encoder();
    let text = "the cat sat on the mat the end";
    let raw = enc.encode(text, no_weights).unwrap();
    let the = raw.iter().find(|(_, c)| *c == 3.0).expect("'the' three times").0;
    // Weights for the first `the + 1` ids only: ids past them keep their count.
    let weights: Vec<f32> = (0..=the).map(|id| 0.5 + id as f32 / 1000.0).collect();
    let weighted = enc.encode(text, || Some(weights.clone())).unwrap();
    assert_eq!(weighted.len(), raw.len());
    for ((id, c), (wid, w)) in raw.iter().zip(&weighted) {
        assert_eq!(id, wid);
        let expected = match weights.get(*id as usize) {
            Some(x) => c * x,
            None => *c,
        };
        assert_eq!(*w, expected, "id {id}");
    }
    assert!(raw.iter().any(|(id, _)| *id as usize >= weights.len()), "some id lies past the weights");
}

#[test]
fn long_queries_are_cut_at_max_query_tokens_and_blank_ones_have_no_tokens() {
    let enc = encoder();
    let long = "river ".repeat(3 * MAX_QUERY_TOKENS);
    let pairs = enc.encode(&long, no_weights).unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].1, MAX_QUERY_TOKENS as f32);
    assert_eq!(enc.encode("  \t\n ", no_weights), Err(LookupError::NoTokens));
    // Weights are not asked of a query without tokens.
    let asked = std::cell::Cell::new(false);
    let r = enc.encode("", || {
        asked.set(true);
        Some(vec![1.0f32])
    });
    assert_eq!(r, Err(LookupError::NoTokens));
    assert!(!asked.get());
}
