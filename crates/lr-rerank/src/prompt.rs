//! PE-Rank's ranking prompt: the user message of the public code, rendered by the checkpoint's
//! own chat template (a real Jinja engine, as transformers renders it) and tokenized with no
//! extra special tokens. Every fact here decides the ranking (shared/notes/pe-rank.md).

use lr_model::{ModelError, Result};
use lr_tokenizer::Tokenizer;
use minijinja::{context, Environment, Error, ErrorKind};

use crate::checkpoint::{RerankerCheckpoint, PLACEHOLDER};

/// How candidates enter the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One token per passage: its projected embedding (PE-Rank).
    Embedding,
    /// The projected embedding followed by the passage text (the paper's "embeddings + text").
    Text,
}

impl Mode {
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "embedding" => Some(Mode::Embedding),
            "text" => Some(Mode::Text),
            _ => None,
        }
    }
}

/// A tokenized prompt: `ids[placeholders[i]]` is the `<PLACEHOLDER>` of candidate i.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    pub placeholders: Vec<usize>,
}

/// No token covers more bytes than this (real vocabularies stay far below), so a query and
/// passages of more bytes than `max_length ×` this cannot fit the context: they are refused
/// before anything renders or tokenizes them.
pub const MAX_BYTES_PER_TOKEN: usize = 64;

/// Refuses a query (it enters the prompt twice) and passage texts too long for `max_length`
/// positions, by their bytes alone.
pub fn check_text_size(query: &str, passages: Option<&[String]>, max_length: usize) -> std::result::Result<(), String> {
    let bytes = 2 * query.len() + passages.map_or(0, |p| p.iter().map(String::len).sum());
    let limit = max_length.saturating_mul(MAX_BYTES_PER_TOKEN);
    if bytes > limit {
        return Err(format!(
            "the query{} {bytes} bytes in the prompt; a context of {max_length} tokens holds at most {limit}",
            if passages.is_some() { " and the passages take" } else { " takes" }
        ));
    }
    Ok(())
}

/// A passage's text as the public code puts it after its placeholder in text mode: stripped,
/// with "[<digits>]" written "(<digits>)" so that it cannot look like a candidate marker.
pub fn passage_content(passage: &str) -> String {
    static MARKER: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let marker = MARKER.get_or_init(|| regex::Regex::new(r"\[(\d+)\]").expect("a valid pattern"));
    marker.replace_all(passage.trim(), "($1)").into_owned()
}

/// The user message for `query` and `n` candidates; `passages` (text mode) are their texts.
pub fn user_message(query: &str, n: usize, passages: Option<&[String]>) -> String {
    let mut m = format!(
        "I will provide you with {n} passages, each with a special token representing the passage enclosed in [], followed by original text.\n\
         Rank the passages based on their relevance to the search query: {query}.\n"
    );
    for i in 0..n {
        match passages {
            None => m.push_str(&format!("Passage {}: [{PLACEHOLDER}]\n\n", i + 1)),
            Some(texts) => m.push_str(&format!("Passage {}: [{PLACEHOLDER}] {}\n\n", i + 1, passage_content(&texts[i]))),
        }
    }
    m.push_str(&format!(
        "Search Query: {query}.\n\
         Rank the {n} relatively ordered passages above based on their relevance to the search query, output the ranking in descending order. Only output the {n} unique special token in the ranking.\n\n"
    ));
    m
}

/// Template instructions one render may run (the Mistral template takes about a hundred).
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Renders and tokenizes prompts for one checkpoint.
pub struct PromptBuilder {
    env: Environment<'static>,
    tokenizer: Tokenizer,
    placeholder_id: u32,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(message: String) -> std::result::Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl PromptBuilder {
    pub fn new(checkpoint: &RerankerCheckpoint) -> Result<Self> {
        let tokenizer = lr_tokenizer::load_tokenizer(&checkpoint.tokenizer_path, None).map_err(ModelError::InvalidModel)?;
        // transformers renders chat templates with trim_blocks and lstrip_blocks, Python string
        // methods available, and raise_exception() for the template's own checks.
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // A bound on the template's work: a chat template is a few loops over the messages.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", checkpoint.chat_template.clone())
            .map_err(|e| ModelError::InvalidModel(format!("the chat_template of {} does not parse: {e}", checkpoint.dir.display())))?;
        Ok(PromptBuilder {
            env,
            tokenizer,
            placeholder_id: checkpoint.placeholder_id,
            bos_token: checkpoint.bos_token.clone(),
            eos_token: checkpoint.eos_token.clone(),
        })
    }

    /// The chat template applied to one user message, with the generation prompt.
    pub fn render(&self, content: &str) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| ModelError::Inference(e.to_string()))?;
        template
            .render(context! {
                messages => vec![context! { role => "user", content => content }],
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                add_generation_prompt => true,
            })
            .map_err(|e| ModelError::Inference(format!("chat template: {e}")))
    }

    /// The whole prompt for `query` and `n` candidates (`passages` in text mode).
    pub fn prompt(&self, query: &str, n: usize, passages: Option<&[String]>) -> Result<Prompt> {
        if passages.is_some_and(|p| p.len() != n) {
            return Err(ModelError::Inference(format!("{n} candidates but {} passage texts", passages.map_or(0, <[_]>::len))));
        }
        let text = self.render(&user_message(query, n, passages))?;
        if text.len() > lr_tokenizer::MAX_TOKENIZED_BYTES {
            // The tokenizer holds ≈ 55× a text, and this may run in a backend.
            return Err(ModelError::Inference(format!(
                "the prompt has {} bytes, over the {} a text may have to be tokenized",
                text.len(),
                lr_tokenizer::MAX_TOKENIZED_BYTES
            )));
        }
        let enc = self.tokenizer.encode(text.as_str(), false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids().to_vec();
        let placeholders: Vec<usize> =
            ids.iter().enumerate().filter(|(_, &id)| id == self.placeholder_id).map(|(i, _)| i).collect();
        if placeholders.len() != n {
            // A query or passage holding the placeholder token itself.
            return Err(ModelError::Inference(format!(
                "the prompt holds {} {PLACEHOLDER} tokens for {n} candidates: the query or a passage contains \"{PLACEHOLDER}\"",
                placeholders.len()
            )));
        }
        Ok(Prompt { text, ids, placeholders })
    }
}
