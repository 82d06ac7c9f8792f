use lr_table::{Dtype, LookupEncoder, LookupError, QueryTable, TableError, TableMeta, TableWriter, HEADER_ALIGN};
use std::path::PathBuf;

fn tmpdir(name: &str) -> PathBuf {
    lr_testkit::temp_dir("lr-table-test", name)
}

fn meta() -> TableMeta {
    TableMeta {
        model: "m".into(),
        instruction: Some("Given a \"query\"\nretrieve".into()),
        tokenizer_fingerprint: "abc".into(),
        build: serde_json::json!({"method": "test"}),
    }
}

fn values(rows: usize, dims: usize) -> Vec<f32> {
    (0..rows * dims).map(|i| (i as f32 * 0.37).sin()).collect()
}

fn write(path: &std::path::Path, rows: usize, dims: usize, dtype: Dtype, chunk_rows: usize) -> u64 {
    let v = values(rows, dims);
    let mut w = TableWriter::create(path, &meta(), rows as u64, dims as u32, dtype).unwrap();
    for c in v.chunks(chunk_rows * dims) {
        w.write_rows(c).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn round_trip_f32_is_exact_and_aligned() {
    let d = tmpdir("f32");
    let p = d.join("t.lrt");
    let checksum = write(&p, 7, 5, Dtype::F32, 3);
    let t = QueryTable::open(&p).unwrap();
    assert_eq!((t.rows(), t.dims(), t.dtype(), t.checksum()), (7, 5, Dtype::F32, checksum));
    let v = values(7, 5);
    for r in 0..7 {
        assert_eq!(t.row(r), v[r * 5..(r + 1) * 5].to_vec());
    }
    assert_eq!(t.meta().unwrap(), meta());
    assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, HEADER_ALIGN + 7 * 5 * 4);
    assert!(!d.join("t.lrt.tmp").exists());
}

#[test]
fn checksum_does_not_depend_on_chunking_and_f16_rounds() {
    let d = tmpdir("chunks");
    // 3 dims of f16 = 6 bytes a row: words straddle rows.
    let a = write(&d.join("a.lrt"), 9, 3, Dtype::F16, 1);
    let b = write(&d.join("b.lrt"), 9, 3, Dtype::F16, 4);
    assert_eq!(a, b);
    let t = QueryTable::open(&d.join("a.lrt")).unwrap();
    let v = values(9, 3);
    for (x, y) in t.row(8).iter().zip(&v[24..27]) {
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
}

#[test]
fn damage_is_detected() {
    let d = tmpdir("damage");
    let p = d.join("t.lrt");
    write(&p, 4, 4, Dtype::F32, 4);
    let good = std::fs::read(&p).unwrap();
    let expect_corrupt = |bytes: &[u8], what: &str| {
        std::fs::write(&p, bytes).unwrap();
        match QueryTable::open(&p) {
            Err(TableError::Corrupt { reason, .. }) => assert!(reason.contains(what), "{reason}"),
            other => panic!("expected corruption ({what}), got {other:?}"),
        }
    };
    let mut b = good.clone();
    b[HEADER_ALIGN + 5] ^= 1;
    expect_corrupt(&b, "data checksum");
    let mut b = good.clone();
    b[20] ^= 1;
    expect_corrupt(&b, "header checksum");
    expect_corrupt(&good[..good.len() - 4], "bytes, header says");
    let mut b = good.clone();
    b[0] = b'X';
    expect_corrupt(&b, "bad magic");
    expect_corrupt(&good[..100], "shorter than the header");
    assert!(matches!(QueryTable::open(&d.join("missing.lrt")), Err(TableError::Io { .. })));
}

#[test]
fn writer_refuses_bad_input_and_leaves_nothing() {
    let d = tmpdir("refuse");
    let p = d.join("t.lrt");
    let mut w = TableWriter::create(&p, &meta(), 2, 2, Dtype::F32).unwrap();
    assert!(w.write_rows(&[1.0, 2.0, 3.0]).is_err());
    assert!(w.write_rows(&[1.0, f32::NAN]).is_err());
    w.write_rows(&[1.0, 2.0]).unwrap();
    assert!(w.finish().is_err(), "one row short must fail");
    assert!(!p.exists() && !d.join("t.lrt.tmp").exists());
    let w = TableWriter::create(&p, &meta(), 2, 2, Dtype::F32).unwrap();
    w.abort();
    assert!(!d.join("t.lrt.tmp").exists());
    // A writer dropped half-way (an error path with `?`, a panic) leaves nothing either.
    {
        let mut w = TableWriter::create(&p, &meta(), 2, 2, Dtype::F32).unwrap();
        w.write_rows(&[1.0, 2.0]).unwrap();
        assert!(d.join("t.lrt.tmp").exists());
    }
    assert!(!p.exists() && !d.join("t.lrt.tmp").exists());
    let long = TableMeta { instruction: Some("x".repeat(5000)), ..meta() };
    assert!(TableWriter::create(&p, &long, 2, 2, Dtype::F32).is_err());
}

/// A tokenizer whose vocabulary is exactly the words below (whitespace split), for lookup math.
fn word_tokenizer(d: &std::path::Path) -> lr_tokenizer::Tokenizer {
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "far": 4}, "unk_token": "[UNK]"}
    });
    let p = d.join("tokenizer.json");
    std::fs::write(&p, json.to_string()).unwrap();
    lr_tokenizer::load_tokenizer(&p, None).unwrap()
}

#[test]
fn lookup_is_normalised_mean_of_rows() {
    let d = tmpdir("lookup");
    let p = d.join("t.lrt");
    let rows: Vec<f32> = vec![
        9.0, 9.0, // [UNK]
        1.0, 0.0, // a
        0.0, 2.0, // b
        0.0, 0.0, // c
        3.0, 4.0, // far
    ];
    let mut w = TableWriter::create(&p, &meta(), 5, 2, Dtype::F32).unwrap();
    w.write_rows(&rows).unwrap();
    w.finish().unwrap();
    let enc = LookupEncoder::new(QueryTable::open(&p).unwrap(), word_tokenizer(&d));
    // a + b + b = (1, 4) → normalised.
    let v = enc.encode("a b b").unwrap();
    let n = (17f32).sqrt();
    assert!((v[0] - 1.0 / n).abs() < 1e-6 && (v[1] - 4.0 / n).abs() < 1e-6, "{v:?}");
    assert_eq!(enc.encode(""), Err(LookupError::NoTokens));
    assert_eq!(enc.encode("   "), Err(LookupError::NoTokens));
    assert_eq!(enc.encode("c c"), Err(LookupError::ZeroVector));
    assert_eq!(enc.encode_ids(&[7]), Err(LookupError::IdOutOfRange { id: 7, rows: 5 }));
    // Truncation at 512 tokens: 600 × "far" then "a" gives exactly the "far" direction.
    let long = format!("{} a", "far ".repeat(600));
    let v = enc.encode(&long).unwrap();
    assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6, "{v:?}");
}

fn write_weighted(path: &std::path::Path, rows: usize, dims: usize, dtype: Dtype, weights: &[f32]) -> u64 {
    let mut w = TableWriter::create(path, &meta(), rows as u64, dims as u32, dtype).unwrap();
    w.write_rows(&values(rows, dims)).unwrap();
    w.write_weights(weights).unwrap();
    w.finish().unwrap()
}

#[test]
fn weights_round_trip_for_both_dtypes() {
    let d = tmpdir("weights");
    for (dtype, dims) in [(Dtype::F32, 5), (Dtype::F16, 3)] {
        // f16 × 3 dims × 7 rows = 42 bytes: the weights start after 6 bytes of padding.
        let p = d.join(format!("{}.lrt", dtype.name()));
        let weights: Vec<f32> = (0..7).map(|i| i as f32 * 0.5).collect();
        let with = write_weighted(&p, 7, dims, dtype, &weights);
        let t = QueryTable::open(&p).unwrap();
        assert!(t.has_weights());
        assert_eq!(t.weights().unwrap(), weights);
        assert_eq!(t.weight(3), 1.5);
        let row_bytes = 7 * dims * dtype.size();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len() as usize,
            HEADER_ALIGN + row_bytes.div_ceil(8) * 8 + 7 * 4
        );
        // The same rows without weights: no weights, weight 1, a different checksum.
        let q = d.join(format!("{}-plain.lrt", dtype.name()));
        let without = write(&q, 7, dims, dtype, 7);
        let t = QueryTable::open(&q).unwrap();
        assert!(!t.has_weights() && t.weights().is_none() && t.weight(3) == 1.0);
        assert_ne!(with, without, "the checksum covers the weights");
    }
}

#[test]
fn weight_damage_is_detected() {
    let d = tmpdir("weight-damage");
    let p = d.join("t.lrt");
    write_weighted(&p, 4, 3, Dtype::F16, &[1.0, 2.0, 3.0, 4.0]);
    let good = std::fs::read(&p).unwrap();
    let expect_corrupt = |bytes: &[u8], what: &str| {
        std::fs::write(&p, bytes).unwrap();
        match QueryTable::open(&p) {
            Err(TableError::Corrupt { reason, .. }) => assert!(reason.contains(what), "{reason}"),
            other => panic!("expected corruption ({what}), got {other:?}"),
        }
    };
    // A flipped bit in the last weight, in the padding, and a missing weight.
    let mut b = good.clone();
    let n = b.len();
    b[n - 1] ^= 0x40;
    expect_corrupt(&b, "data checksum");
    let mut b = good.clone();
    b[HEADER_ALIGN + 4 * 3 * 2] ^= 1;
    expect_corrupt(&b, "data checksum");
    expect_corrupt(&good[..n - 4], "bytes, header says");
    // Clearing the weights flag (with a valid header checksum) no longer matches the size.
    let mut b = good.clone();
    b[40] = 0;
    let hc = lr_table::fnv1a64_words(0xcbf2_9ce4_8422_2325, &b[..HEADER_ALIGN - 8]);
    b[HEADER_ALIGN - 8..HEADER_ALIGN].copy_from_slice(&hc.to_le_bytes());
    expect_corrupt(&b, "bytes, header says");
    // An unknown flag is refused.
    let mut b = good.clone();
    b[40] = 3;
    let hc = lr_table::fnv1a64_words(0xcbf2_9ce4_8422_2325, &b[..HEADER_ALIGN - 8]);
    b[HEADER_ALIGN - 8..HEADER_ALIGN].copy_from_slice(&hc.to_le_bytes());
    expect_corrupt(&b, "unknown flags");
}

#[test]
fn writer_refuses_bad_weights() {
    let d = tmpdir("bad-weights");
    let p = d.join("t.lrt");
    let mut w = TableWriter::create(&p, &meta(), 2, 2, Dtype::F32).unwrap();
    w.write_rows(&[1.0, 2.0]).unwrap();
    assert!(w.write_weights(&[1.0, 1.0]).is_err(), "weights before every row is written");
    w.write_rows(&[3.0, 4.0]).unwrap();
    assert!(w.write_weights(&[1.0]).is_err(), "one weight short");
    assert!(w.write_weights(&[1.0, f32::NAN]).is_err());
    assert!(w.write_weights(&[1.0, -0.5]).is_err());
    w.write_weights(&[1.0, 0.0]).unwrap();
    assert!(w.write_weights(&[1.0, 0.0]).is_err(), "twice");
    assert!(w.write_rows(&[5.0, 6.0]).is_err(), "rows after weights");
    w.finish().unwrap();
    assert_eq!(QueryTable::open(&p).unwrap().weights().unwrap(), vec![1.0, 0.0]);
}

#[test]
fn lookup_is_weighted_mean_when_the_table_has_weights() {
    let d = tmpdir("weighted-lookup");
    let p = d.join("t.lrt");
    let rows: Vec<f32> = vec![
        9.0, 9.0, // [UNK]
        1.0, 0.0, // a
        0.0, 2.0, // b
        5.0, 5.0, // c (weight 0: ignored)
        3.0, 4.0, // far
    ];
    let mut w = TableWriter::create(&p, &meta(), 5, 2, Dtype::F32).unwrap();
    w.write_rows(&rows).unwrap();
    w.write_weights(&[1.0, 3.0, 0.5, 0.0, 2.0]).unwrap();
    w.finish().unwrap();
    let enc = LookupEncoder::new(QueryTable::open(&p).unwrap(), word_tokenizer(&d));
    // 3·a + 0.5·b + 0.5·b + 0·c = (3, 2) → normalised; repeats count.
    let v = enc.encode("a b b c").unwrap();
    let n = (13f32).sqrt();
    assert!((v[0] - 3.0 / n).abs() < 1e-6 && (v[1] - 2.0 / n).abs() < 1e-6, "{v:?}");
    // Only zero-weight tokens: no direction.
    assert_eq!(enc.encode("c c"), Err(LookupError::ZeroVector));
    assert_eq!(enc.encode(""), Err(LookupError::NoTokens));
}
