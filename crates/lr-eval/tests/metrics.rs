use std::collections::HashMap;

use lr_eval::{evaluate, min_max_fuse, ndcg_at_k, recall_at_k, search, Bm25, Collection, Qrels, Run};

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn judged(v: &[(&str, f64)]) -> HashMap<String, f64> {
    v.iter().map(|(d, g)| (d.to_string(), *g)).collect()
}

#[test]
fn ndcg_with_graded_relevance_matches_hand_computation() {
    // Relevant: d1 (grade 2), d3 (grade 1). Ranking d3, d2, d1:
    // DCG = 1/log2(2) + 0 + 2/log2(4) = 2; ideal = 2/log2(2) + 1/log2(3) = 2.6309298.
    let j = judged(&[("d1", 2.0), ("d3", 1.0), ("d9", 0.0)]);
    let n = ndcg_at_k(&ids(&["d3", "d2", "d1"]), &j, 10);
    assert!((n - 2.0 / (2.0 + 1.0 / 3f64.log2())).abs() < 1e-12, "{n}");
    assert!((n - 0.760_187_5).abs() < 1e-6, "{n}");
    // The cut: at k=2 only d3 counts: 1 / 2.6309298.
    let n2 = ndcg_at_k(&ids(&["d3", "d2", "d1"]), &j, 2);
    assert!((n2 - 1.0 / (2.0 + 1.0 / 3f64.log2())).abs() < 1e-12);
    // The ideal ranking scores 1; no relevant document scores 0.
    assert!((ndcg_at_k(&ids(&["d1", "d3"]), &j, 10) - 1.0).abs() < 1e-12);
    assert_eq!(ndcg_at_k(&ids(&["d1"]), &judged(&[("d1", 0.0)]), 10), 0.0);
    // Recall: relevant grade > 0 only.
    assert_eq!(recall_at_k(&ids(&["d3", "d2", "d1"]), &j, 2), 0.5);
    assert_eq!(recall_at_k(&ids(&["d3", "d2", "d1"]), &j, 100), 1.0);
}

#[test]
fn evaluate_averages_over_judged_queries_and_counts_missing_ones_as_zero() {
    let mut qrels: Qrels = HashMap::new();
    qrels.insert("q1".into(), judged(&[("a", 1.0)]));
    qrels.insert("q2".into(), judged(&[("b", 1.0)]));
    let mut run: Run = HashMap::new();
    run.insert("q1".into(), vec![("a".into(), 3.0), ("b".into(), 1.0)]);
    run.insert("q3".into(), vec![("b".into(), 3.0)]); // not judged: ignored
    let s = evaluate(&run, &qrels);
    assert_eq!(s.queries, 2);
    assert!((s.ndcg_at_10 - 0.5).abs() < 1e-12 && (s.recall_at_100 - 0.5).abs() < 1e-12, "{s:?}");
}

#[test]
fn min_max_fusion_normalises_each_side() {
    let dense = vec![("a".to_string(), 1.0), ("b".to_string(), 0.5), ("c".to_string(), 0.0)];
    let sparse = vec![("b".to_string(), 10.0), ("d".to_string(), 5.0)];
    let f = min_max_fuse(&dense, &sparse, 0.7);
    // a = 0.7·1, b = 0.7·0.5 + 0.3·1 = 0.65, c = 0, d = 0.3·0 = 0 (ties by id).
    let names: Vec<&str> = f.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert!((f[0].1 - 0.7).abs() < 1e-6 && (f[1].1 - 0.65).abs() < 1e-6 && f[2].1.abs() < 1e-6);
    // One side empty: the other decides; a constant list maps to 1.
    let f = min_max_fuse(&dense, &[], 0.7);
    assert_eq!(f[0].0, "a");
    let f = min_max_fuse(&[("x".to_string(), 2.0)], &[("y".to_string(), 2.0)], 0.7);
    assert_eq!((f[0].0.as_str(), f[1].0.as_str()), ("x", "y"));
    assert!((f[0].1 - 0.7).abs() < 1e-6 && (f[1].1 - 0.3).abs() < 1e-6);
}

#[test]
fn bm25_matches_hand_computation() {
    // Two documents: [1, 2] and [1, 1, 3]; average length 2.5; k1 = 1.2, b = 0.75.
    let bm = Bm25::new(&[vec![1, 2], vec![1, 1, 3]], 1.2, 0.75);
    let idf1 = (1.0f64 + 0.5 / 2.5).ln();
    let s = bm.scores(&[1, 1]); // repeated query terms count once
    let want0 = idf1 * 2.2 / (1.0 + 1.2 * (0.25 + 0.75 * 2.0 / 2.5));
    let want1 = idf1 * 2.0 * 2.2 / (2.0 + 1.2 * (0.25 + 0.75 * 3.0 / 2.5));
    assert!((s[0] as f64 - want0).abs() < 1e-6 && (s[1] as f64 - want1).abs() < 1e-6, "{s:?}");
    let s = bm.scores(&[3, 7]);
    let idf3 = (1.0f64 + 1.5 / 1.5).ln();
    assert_eq!(s[0], 0.0);
    assert!((s[1] as f64 - idf3 * 2.2 / (1.0 + 1.2 * 1.15)).abs() < 1e-6);
}

#[test]
fn search_helpers() {
    assert_eq!(search::top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
    assert_eq!(search::top_k(&[0.1], 5).len(), 1);
    let s = search::dense_scores(&[vec![1.0, 0.0], vec![0.0, 2.0]], &[vec![1.0, 1.0], vec![3.0, 0.0]]).unwrap();
    assert_eq!(s, vec![vec![1.0, 3.0], vec![2.0, 0.0]]);
    assert_eq!(search::sparse_dot(&[(1, 2.0), (4, 1.0), (9, 3.0)], &[(4, 5.0), (9, 1.0), (10, 1.0)]), 8.0);
}

#[test]
fn beir_layout_loads_only_judged_queries() {
    let d = std::env::temp_dir().join(format!("lr-eval-beir-{}", std::process::id()));
    std::fs::create_dir_all(d.join("qrels")).unwrap();
    std::fs::write(
        d.join("corpus.jsonl"),
        "{\"_id\": \"1\", \"title\": \"T\", \"text\": \"body\"}\n{\"_id\": \"2\", \"text\": \"no title\"}\n",
    )
    .unwrap();
    std::fs::write(d.join("queries.jsonl"), "{\"_id\": \"q1\", \"text\": \"a\"}\n{\"_id\": \"q2\", \"text\": \"b\"}\n").unwrap();
    std::fs::write(d.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\nq2\t1\t2\n").unwrap();
    let c = Collection::load(&d, "test").unwrap();
    assert_eq!(c.docs.len(), 2);
    assert_eq!(c.docs[0].full_text(), "T body");
    assert_eq!(c.docs[1].full_text(), " no title");
    assert_eq!(c.queries, vec![("q2".to_string(), "b".to_string())]);
    assert_eq!(c.qrels["q2"]["1"], 2.0);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn svg_is_well_formed_enough() {
    let bars = vec![lr_eval::svg::Bar { label: "a <b>", values: vec![0.4, 0.8] }];
    let s = lr_eval::svg::bar_chart("t & u", &["nDCG@10", "Recall@100"], &bars);
    assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    assert!(s.contains("a &lt;b&gt;") && s.contains("t &amp; u"));
    assert_eq!(s.matches("<rect").count(), 1 + 2 + 2);
}
