//! Okapi BM25 over token ids (the dense model's own tokenizer, so that every system sees the
//! same tokens). Lucene's idf `ln(1 + (N − df + 0.5)/(df + 0.5))`; each distinct query token
//! counts once (query term frequency ignored, as Lucene/Anserini score a bag of terms).

use std::collections::HashMap;

pub struct Bm25 {
    k1: f64,
    b: f64,
    /// token → (document index, term frequency)
    postings: HashMap<u32, Vec<(u32, u32)>>,
    doc_len: Vec<u32>,
    avg_len: f64,
}

impl Bm25 {
    /// `docs`: the token ids of each document.
    pub fn new(docs: &[Vec<u32>], k1: f64, b: f64) -> Self {
        let mut postings: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for (i, ids) in docs.iter().enumerate() {
            let mut tf: HashMap<u32, u32> = HashMap::new();
            ids.iter().for_each(|&t| *tf.entry(t).or_default() += 1);
            let mut tf: Vec<_> = tf.into_iter().collect();
            tf.sort_unstable();
            for (t, f) in tf {
                postings.entry(t).or_default().push((i as u32, f));
            }
        }
        let doc_len: Vec<u32> = docs.iter().map(|d| d.len() as u32).collect();
        let avg_len = doc_len.iter().map(|&l| l as f64).sum::<f64>() / docs.len().max(1) as f64;
        Bm25 { k1, b, postings, doc_len, avg_len }
    }

    pub fn idf(&self, token: u32) -> f64 {
        let n = self.doc_len.len() as f64;
        let df = self.postings.get(&token).map_or(0, |p| p.len()) as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Score of every document for the query's token ids.
    pub fn scores(&self, query: &[u32]) -> Vec<f32> {
        let mut terms = query.to_vec();
        terms.sort_unstable();
        terms.dedup();
        let mut scores = vec![0.0f64; self.doc_len.len()];
        for t in terms {
            let Some(list) = self.postings.get(&t) else { continue };
            let idf = self.idf(t);
            for &(d, f) in list {
                let f = f as f64;
                let norm = 1.0 - self.b + self.b * self.doc_len[d as usize] as f64 / self.avg_len.max(1e-9);
                scores[d as usize] += idf * f * (self.k1 + 1.0) / (f + self.k1 * norm);
            }
        }
        scores.into_iter().map(|s| s as f32).collect()
    }
}
