//! The sparse query side on the real SPLADE-tiny tokenizer: raw id counts, no special tokens.

use lr_testkit::sparse_model_dir;

#[test]
fn counts_ids_without_special_tokens() {
    let tok = lr_tokenizer::load_tokenizer(&sparse_model_dir().join("tokenizer.json"), None).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    let got = lr_tokenizer::count_ids(&tok, "The library, the LIBRARY and the catalogue").unwrap();
    let mut want = vec![
        (id("the"), 3.0),
        (id("library"), 2.0),
        (id(","), 1.0),
        (id("and"), 1.0),
        (id("catalogue"), 1.0),
    ];
    want.sort_by_key(|p| p.0);
    assert_eq!(got, want);
    assert!(!got.iter().any(|p| p.0 == id("[CLS]") || p.0 == id("[SEP]")));
    // LightRetriever counts ids of " " + query: the BERT pre-tokenizer makes that a no-op.
    let count = |t: &str| lr_tokenizer::count_ids(&tok, t).unwrap();
    assert_eq!(count(" The library"), count("The library"));
    assert!(lr_tokenizer::count_ids(&tok, "").unwrap().is_empty());
    assert!(lr_tokenizer::count_ids(&tok, " \t\n").unwrap().is_empty());
}
