//! Constrained greedy decoding over the candidates of one window (PE-Rank): the candidate i is a
//! virtual token whose input embedding and output row are both P(e_i); each step scores
//! h · P(e_i) over the candidates not chosen yet (h = the final-norm hidden state at the last
//! position), takes the argmax and feeds P(e_chosen) back, until every candidate is placed.

use candle_core::{Device, Tensor};
use lr_model::{Decoder, KvCache, ModelError, Result};

use crate::checkpoint::RerankerCheckpoint;
use crate::projector::Projector;
use crate::prompt::{Prompt, PromptBuilder};

/// One window to rank: the query, the candidates' passage embeddings (E each) in their current
/// order, and their texts in text mode (`Mode::Text`; `None` is embedding mode).
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub query: &'a str,
    pub embeddings: &'a [Vec<f32>],
    pub passages: Option<&'a [String]>,
}

/// The ranking of one window: `order[k]` is the candidate (index into the window) placed k-th,
/// `scores[k]` its score h · P(e) at that step.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRanking {
    pub order: Vec<usize>,
    pub scores: Vec<f32>,
}

pub struct Reranker {
    decoder: Decoder,
    projector: Projector,
    prompts: PromptBuilder,
    embedding_size: usize,
    max_length: usize,
}

/// A window being decoded: its prompt, projected candidates and the picks so far.
struct Decoding {
    projected: Tensor,
    chosen: Vec<bool>,
    ranking: WindowRanking,
}

impl Decoding {
    fn done(&self) -> bool {
        self.ranking.order.len() == self.chosen.len()
    }

    /// Scores the candidates not chosen yet against `h` [H] and places the best.
    fn pick(&mut self, h: &Tensor) -> Result<usize> {
        let scores: Vec<f32> = self.projected.matmul(&h.unsqueeze(1)?)?.squeeze(1)?.to_vec1()?;
        let (best, score) = scores
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.chosen[*i])
            .fold(None, |best: Option<(usize, f32)>, (i, &s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((i, s)),
            })
            .ok_or_else(|| ModelError::Inference("no candidate left to place".into()))?;
        if !score.is_finite() {
            // Embeddings of huge magnitude overflow the projector or the norms: no ranking.
            return Err(ModelError::Inference(format!(
                "the decoding scores are not finite ({score}): are the passage embeddings of a sane magnitude?"
            )));
        }
        self.chosen[best] = true;
        self.ranking.order.push(best);
        self.ranking.scores.push(score);
        Ok(best)
    }
}

impl Reranker {
    pub fn load(checkpoint: &RerankerCheckpoint, device: &Device) -> Result<Self> {
        let decoder = Decoder::load(checkpoint.decoder.clone(), &checkpoint.weight_files, None, device)?;
        let projector =
            Projector::load(&checkpoint.weight_files, checkpoint.embedding_size, checkpoint.decoder.hidden_size, device)?;
        Ok(Reranker {
            decoder,
            projector,
            prompts: PromptBuilder::new(checkpoint)?,
            embedding_size: checkpoint.embedding_size,
            max_length: checkpoint.max_length,
        })
    }

    pub fn prompts(&self) -> &PromptBuilder {
        &self.prompts
    }

    pub fn embedding_size(&self) -> usize {
        self.embedding_size
    }

    /// P(e) of a window's candidates, [n, H].
    pub fn project(&self, embeddings: &[Vec<f32>]) -> Result<Tensor> {
        if let Some(bad) = embeddings.iter().position(|e| e.len() != self.embedding_size) {
            return Err(ModelError::Inference(format!(
                "candidate {} has {} dimensions; the reranker takes {}",
                bad + 1,
                embeddings[bad].len(),
                self.embedding_size
            )));
        }
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let e = Tensor::from_vec(flat, (embeddings.len(), self.embedding_size), self.decoder.device())?;
        self.projector.forward(&e)
    }

    /// The prompt of a window, checked against the context the model allows.
    pub fn prompt(&self, window: &Window) -> Result<Prompt> {
        let n = window.embeddings.len();
        if n < 1 {
            return Err(ModelError::Inference("a window needs at least one candidate".into()));
        }
        crate::prompt::check_text_size(window.query, window.passages, self.max_length).map_err(ModelError::Inference)?;
        let prompt = self.prompts.prompt(window.query, n, window.passages)?;
        // The prompt, then n - 1 fed-back picks (the last pick needs no forward).
        let positions = prompt.ids.len() + n - 1;
        if positions > self.max_length {
            return Err(ModelError::Inference(format!(
                "{n} candidates need {positions} positions (prompt {} tokens); the model allows {}: use a smaller window",
                prompt.ids.len(),
                self.max_length
            )));
        }
        Ok(prompt)
    }

    /// The input embeddings of a prompt [t, H]: token embeddings, with P(e_i) at the i-th placeholder.
    fn prompt_inputs(&self, prompt: &Prompt, projected: &Tensor) -> Result<Tensor> {
        let device = self.decoder.device();
        let mut pieces = Vec::with_capacity(2 * prompt.placeholders.len() + 1);
        let mut from = 0;
        for (i, &at) in prompt.placeholders.iter().enumerate() {
            if at > from {
                pieces.push(self.token_embeddings(&prompt.ids[from..at], device)?);
            }
            pieces.push(projected.narrow(0, i, 1)?);
            from = at + 1;
        }
        if from < prompt.ids.len() {
            pieces.push(self.token_embeddings(&prompt.ids[from..], device)?);
        }
        Ok(Tensor::cat(&pieces, 0)?)
    }

    fn token_embeddings(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, (1, ids.len()), device)?;
        Ok(self.decoder.embed(&ids)?.squeeze(0)?)
    }

    /// Ranks several windows at once (from concurrent callers): one batched prefill, then
    /// decode steps in lockstep, a finished window feeding padding until the longest is done.
    /// The tokens every window's prompt begins with (the instruction before the query for
    /// different queries, up to the first candidate for windows of one query) run once and
    /// their keys and values are shared; after them each prompt is left-padded to the longest.
    pub fn rank(&self, windows: &[Window]) -> Result<Vec<WindowRanking>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.decoder.device();
        let hidden = self.decoder.hidden_size();
        let mut states = Vec::with_capacity(windows.len());
        let mut prompts = Vec::with_capacity(windows.len());
        let mut inputs = Vec::with_capacity(windows.len());
        for w in windows {
            let prompt = self.prompt(w)?;
            let projected = self.project(w.embeddings)?;
            inputs.push(self.prompt_inputs(&prompt, &projected)?);
            prompts.push(prompt);
            let n = w.embeddings.len();
            states.push(Decoding {
                projected,
                chosen: vec![false; n],
                ranking: WindowRanking { order: Vec::with_capacity(n), scores: Vec::with_capacity(n) },
            });
        }
        let shared = if windows.len() > 1 { shared_prefix(&prompts) } else { 0 };
        let mut cache: KvCache = if shared > 0 {
            let mut prefix = self.decoder.new_cache(1);
            self.decoder.forward(&inputs[0].narrow(0, 0, shared)?.unsqueeze(0)?, &[vec![true; shared]], &mut prefix)?;
            prefix.repeat(windows.len())?
        } else {
            self.decoder.new_cache(windows.len())
        };
        let longest = prompts.iter().map(|p| p.ids.len() - shared).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(inputs.len());
        let mut real = Vec::with_capacity(inputs.len());
        for x in &inputs {
            let t = x.dim(0)? - shared;
            let x = x.narrow(0, shared, t)?;
            let mut mask = vec![false; longest - t];
            mask.extend(std::iter::repeat_n(true, t));
            real.push(mask);
            rows.push(if t < longest { Tensor::cat(&[&Tensor::zeros((longest - t, hidden), x.dtype(), device)?, &x], 0)? } else { x });
        }
        let mut last = self.decoder.forward(&Tensor::stack(&rows, 0)?, &real, &mut cache)?.narrow(1, longest - 1, 1)?.squeeze(1)?;
        loop {
            let mut next = Vec::with_capacity(states.len());
            let mut step_real = Vec::with_capacity(states.len());
            for (r, state) in states.iter_mut().enumerate() {
                if state.done() {
                    next.push(Tensor::zeros((1, hidden), last.dtype(), device)?);
                    step_real.push(vec![false]);
                    continue;
                }
                let best = state.pick(&last.get(r)?)?;
                next.push(state.projected.narrow(0, best, 1)?);
                step_real.push(vec![!state.done()]);
            }
            if states.iter().all(Decoding::done) {
                break;
            }
            last = self.decoder.forward(&Tensor::stack(&next, 0)?, &step_real, &mut cache)?.squeeze(1)?;
        }
        Ok(states.into_iter().map(|s| s.ranking).collect())
    }

    /// The same ranking with no KV cache: the whole sequence (prompt and the picks fed so far)
    /// run again at every step. Slow; it exists to check [`Reranker::rank`].
    pub fn rank_recomputed(&self, window: &Window) -> Result<WindowRanking> {
        let prompt = self.prompt(window)?;
        let projected = self.project(window.embeddings)?;
        let mut sequence = self.prompt_inputs(&prompt, &projected)?;
        let n = window.embeddings.len();
        let mut state = Decoding {
            projected: projected.clone(),
            chosen: vec![false; n],
            ranking: WindowRanking { order: Vec::new(), scores: Vec::new() },
        };
        while !state.done() {
            let t = sequence.dim(0)?;
            let mut cache = self.decoder.new_cache(1);
            let hidden = self.decoder.forward(&sequence.unsqueeze(0)?, &[vec![true; t]], &mut cache)?;
            let best = state.pick(&hidden.get(0)?.get(t - 1)?)?;
            sequence = Tensor::cat(&[&sequence, &projected.narrow(0, best, 1)?], 0)?;
        }
        Ok(state.ranking)
    }
}

/// How many leading tokens all prompts share, up to the first candidate of any (a placeholder's
/// input is its own candidate's embedding, so nothing from there on can be shared).
fn shared_prefix(prompts: &[Prompt]) -> usize {
    let first = &prompts[0].ids;
    prompts.iter().fold(first.len(), |shared, p| {
        let limit = shared.min(p.ids.len()).min(p.placeholders.first().copied().unwrap_or(p.ids.len()));
        first.iter().zip(&p.ids).take(limit).take_while(|(a, b)| a == b).count()
    })
}
