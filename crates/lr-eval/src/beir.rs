//! BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`),
//! `qrels/<split>.tsv` (header `query-id corpus-id score`). A directory with neither queries nor
//! qrels is an unlabelled corpus (no judged queries).

use std::collections::HashMap;
use std::path::Path;

use crate::metrics::Qrels;

#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
}

impl Document {
    /// The text documents are encoded and indexed from: title + " " + text.
    pub fn full_text(&self) -> String {
        format!("{} {}", self.title, self.text)
    }
}

#[derive(Debug, Clone)]
pub struct Collection {
    pub docs: Vec<Document>,
    /// Only queries that have judgements in the split, in file order.
    pub queries: Vec<(String, String)>,
    pub qrels: Qrels,
}

fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

fn field(v: &serde_json::Value, key: &str) -> String {
    match &v[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Collection {
    pub fn load(dir: &Path, split: &str) -> Result<Self, String> {
        let docs = read_jsonl(&dir.join("corpus.jsonl"))?
            .iter()
            .map(|v| Document { id: field(v, "_id"), title: field(v, "title"), text: field(v, "text") })
            .collect::<Vec<_>>();
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        if !qrels_path.exists() && !dir.join("queries.jsonl").exists() {
            // A corpus without queries: label-free studies only.
            return Ok(Collection { docs, queries: Vec::new(), qrels: HashMap::new() });
        }
        let text = std::fs::read_to_string(&qrels_path).map_err(|e| format!("{}: {e}", qrels_path.display()))?;
        let mut qrels: Qrels = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let parts: Vec<&str> = line.split('\t').collect();
            if parts.len() < 3 || (i == 0 && parts[2].trim().parse::<f64>().is_err()) {
                continue;
            }
            let grade: f64 = parts[2].trim().parse().map_err(|_| format!("{}:{}: bad score", qrels_path.display(), i + 1))?;
            qrels.entry(parts[0].to_string()).or_default().insert(parts[1].to_string(), grade);
        }
        let queries = read_jsonl(&dir.join("queries.jsonl"))?
            .iter()
            .map(|v| (field(v, "_id"), field(v, "text")))
            .filter(|(id, _)| qrels.contains_key(id))
            .collect();
        Ok(Collection { docs, queries, qrels })
    }
}
