//! The wire format between backends and the encoder worker, over a Unix socket.
//!
//! Every message is a frame: a little-endian `u32` length, then the body. A request body is
//! JSON (texts and the model's catalog record, so the worker never reads the catalog); a reply
//! body is binary, because vectors are most of the bytes:
//!
//! ```text
//! 0 u32 len utf8               error (1 = the model could not be loaded, 0 = it failed on these inputs)
//! 1 u32 rows u32 dims f32*     dense vectors, row-major
//! 2 u32 rows (u32 nnz (u32 f32)*)*   sparse vectors, sorted by index
//! 3 u32 rows (u32 n (u32 f32)*)*     rankings: (candidate, score) best first
//! ```

use std::io::{self, Read, Write};

use lr_model::ModelInfo;
use serde::{Deserialize, Serialize};

/// A frame larger than this is refused (a corrupt length must not allocate the machine away).
pub const MAX_FRAME: usize = 1 << 30;

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// L2-normalised document vectors (`lr_encode_document(s)`).
    Dense { texts: Vec<String> },
    /// Sparse document weights from the model's LM head (`lr_encode_document_sparse`).
    Sparse { texts: Vec<String> },
    /// Dense vectors of short spans, in larger forward batches (query-table fitting).
    Spans { texts: Vec<String> },
    /// Untrained query-table rows: each id encoded alone (`lr_build_query_table`).
    TableRows { instruction: Option<String>, ids: Vec<u32> },
    /// PE-Rank windows, one ranking each (`lr_rerank`); windows of concurrent callers share
    /// the prefill and the decode steps.
    Rerank { windows: Vec<RerankWindow> },
}

/// One window for the reranker: the query and the candidates' passage embeddings in their
/// current order; with `passages` (their texts) it is ranked in text mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankWindow {
    pub query: String,
    pub embeddings: Vec<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passages: Option<Vec<String>>,
}

impl Task {
    /// Inputs in this task (the unit of micro-batching).
    pub fn len(&self) -> usize {
        match self {
            Task::Dense { texts } | Task::Sparse { texts } | Task::Spans { texts } => texts.len(),
            Task::TableRows { ids, .. } => ids.len(),
            Task::Rerank { windows } => windows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Task::Dense { .. } => "dense",
            Task::Sparse { .. } => "sparse",
            Task::Spans { .. } => "spans",
            Task::TableRows { .. } => "table_rows",
            Task::Rerank { .. } => "rerank",
        }
    }
}

/// One call: a task for the registered model `model`, whose catalog record is `info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub model: String,
    pub info: ModelInfo,
    #[serde(flatten)]
    pub task: Task,
}

/// What a task computed: one vector per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Dense(Vec<Vec<f32>>),
    Sparse(Vec<Vec<(u32, f32)>>),
    /// Per window: (candidate index in the window, score of its pick), best first.
    Rankings(Vec<Vec<(u32, f32)>>),
}

impl Output {
    pub fn len(&self) -> usize {
        match self {
            Output::Dense(v) => v.len(),
            Output::Sparse(v) | Output::Rankings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The model could not be loaded: every input of every task for it fails alike.
    Load(String),
    /// The model ran and failed on these inputs (or the task was invalid for it).
    Encode(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Load(m) | Failure::Encode(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

pub type Reply = Result<Output, Failure>;

pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("message of {} bytes is over the {MAX_FRAME}-byte limit", body.len())));
    }
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(body)?;
    w.flush()
}

pub fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes is over the limit")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

pub fn encode_request(req: &Request) -> Vec<u8> {
    serde_json::to_vec(req).expect("a request always serialises")
}

pub fn decode_request(body: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed request: {e}"))
}

pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    match reply {
        Err(f) => {
            out.push(0);
            out.push(matches!(f, Failure::Load(_)) as u8);
            put(&mut out, f.message().len() as u32);
            out.extend_from_slice(f.message().as_bytes());
        }
        Ok(Output::Dense(rows)) => {
            let dims = rows.first().map_or(0, Vec::len);
            out.reserve(9 + rows.len() * dims * 4);
            out.push(1);
            put(&mut out, rows.len() as u32);
            put(&mut out, dims as u32);
            for row in rows {
                assert_eq!(row.len(), dims, "dense rows of one reply have one width");
                for v in row {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(Output::Sparse(rows) | Output::Rankings(rows)) => {
            out.push(if matches!(reply, Ok(Output::Sparse(_))) { 2 } else { 3 });
            put(&mut out, rows.len() as u32);
            for row in rows {
                put(&mut out, row.len() as u32);
                for (i, v) in row {
                    put(&mut out, *i);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Reads little-endian words off a reply body, refusing to run past its end.
struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.body.len()).ok_or("truncated reply")?;
        let s = &self.body[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

pub fn decode_reply(body: &[u8]) -> Result<Reply, String> {
    let mut c = Cursor { body, at: 0 };
    let reply = match c.byte()? {
        0 => {
            let load = c.byte()? == 1;
            let n = c.u32()? as usize;
            let msg = String::from_utf8_lossy(c.take(n)?).into_owned();
            Err(if load { Failure::Load(msg) } else { Failure::Encode(msg) })
        }
        1 => {
            let (rows, dims) = (c.u32()? as usize, c.u32()? as usize);
            let bytes = rows.checked_mul(dims).and_then(|n| n.checked_mul(4)).ok_or("reply too large")?;
            let data = c.take(bytes)?;
            let floats: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            Ok(Output::Dense(if dims == 0 { vec![Vec::new(); rows] } else { floats.chunks(dims).map(<[f32]>::to_vec).collect() }))
        }
        kind @ (2 | 3) => {
            let rows = c.u32()? as usize;
            let mut out = Vec::with_capacity(rows.min(1 << 16));
            for _ in 0..rows {
                let nnz = c.u32()? as usize;
                let mut row = Vec::with_capacity(nnz.min(1 << 20));
                for _ in 0..nnz {
                    row.push((c.u32()?, c.f32()?));
                }
                out.push(row);
            }
            Ok(if kind == 2 { Output::Sparse(out) } else { Output::Rankings(out) })
        }
        t => return Err(format!("unknown reply type {t}")),
    };
    if c.at != body.len() {
        return Err("trailing bytes after the reply".into());
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_exactly() {
        let replies = [
            Ok(Output::Dense(vec![vec![1.0, -0.5, f32::MIN_POSITIVE], vec![0.0, 3.25, -1e-30]])),
            Ok(Output::Dense(vec![])),
            Ok(Output::Sparse(vec![vec![(3, 0.5), (70000, 2.0)], vec![]])),
            Ok(Output::Rankings(vec![vec![(1, 7.5), (0, -2.25)], vec![(0, 0.0)]])),
            Err(Failure::Load("cannot read model.safetensors".into())),
            Err(Failure::Encode("ünïcode error".into())),
        ];
        for r in replies {
            assert_eq!(decode_reply(&encode_reply(&r)).unwrap(), r);
        }
    }

    #[test]
    fn damaged_replies_are_errors_not_garbage() {
        let body = encode_reply(&Ok(Output::Dense(vec![vec![1.0, 2.0]])));
        assert!(decode_reply(&body[..body.len() - 1]).is_err());
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_reply(&longer).is_err());
        assert!(decode_reply(&[9]).is_err());
        assert!(decode_reply(&[]).is_err());
    }

    #[test]
    fn frames_round_trip_and_refuse_huge_lengths() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"hello");
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame(&mut huge.as_slice()).is_err());
    }
}
