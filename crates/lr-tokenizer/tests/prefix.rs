//! `PrefixCutter` / `prefix_for_tokens`: the cut text's first N ids must be exactly the whole
//! text's, for every tokenizer family it cuts for: the real BERT WordPiece tokenizers (and
//! variants), the tiny decoders' WordLevel tokenizers, and byte-level BPE (GPT-2, Qwen2, Llama-3,
//! o200k regexes) and SentencePiece-style BPE (Llama-2 Prepend/Replace with byte fallback, Mistral
//! Metaspace, Metaspace with split) trained here on CISI. Texts: CISI documents concatenated,
//! whitespace runs, giant words, multibyte UTF-8, punctuation runs, texts around the budget
//! sizes, and a seeded fuzz; then the bound on a 14 MB text.

use lr_testkit::Rng;
use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use lr_tokenizer::{load_tokenizer, plain_ids, prefix_for_tokens, PrefixCutter, QueryTokenizer, Tokenizer};
use tokenizers::models::bpe::{BpeTrainerBuilder, Vocab, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{BertNormalizer, Lowercase, Prepend, Replace, Sequence as NormSeq, NFC, NFKC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Model, PaddingParams, SplitDelimiterBehavior, TruncationDirection, TruncationParams};

const NS: [usize; 4] = [1, 7, 256, 512];

const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const O200K: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

// ---------------------------------------------------------------------------------------------
// texts

fn cisi_docs() -> Vec<String> {
    lr_testkit::cisi_docs()
}

/// CISI documents concatenated into texts of about `size` bytes each.
fn long_cisi_texts(size: usize, count: usize) -> Vec<String> {
    let docs = cisi_docs();
    let mut out = Vec::new();
    let mut cur = String::new();
    for d in docs.iter().cycle() {
        cur.push_str(d);
        cur.push_str("\n\n");
        if cur.len() >= size {
            out.push(std::mem::take(&mut cur));
            if out.len() == count {
                break;
            }
        }
    }
    out
}

fn words() -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in cisi_docs().iter().take(300) {
        for w in d.split_whitespace() {
            if seen.insert(w.to_string()) {
                out.push(w.to_string());
            }
        }
    }
    out
}

/// Hand-made long texts: whitespace runs, giant words, multibyte UTF-8, punctuation runs.
fn edge_texts() -> Vec<(String, String)> {
    let words = words();
    let prose = |n: usize, sep: &str| -> String {
        words.iter().cycle().take(n).map(String::as_str).collect::<Vec<_>>().join(sep)
    };
    let mut t: Vec<(String, String)> = Vec::new();
    let mut push = |name: &str, s: String| t.push((name.to_string(), s));
    push("prose", prose(2500, " "));
    push("newline prose", prose(2500, "\n"));
    push("tab prose", prose(2500, "\t"));
    push("crlf prose", prose(2500, "\r\n"));
    push("punct newline", prose(2500, ".\n"));
    push("punct newlines", prose(1800, ".\n\n\n"));
    let mut s = String::new();
    for (i, w) in words.iter().take(60).enumerate() {
        s.push_str(w);
        let run = [3000, 1, 700, 4100, 2][i % 5];
        s.push_str(&[" ", "\n", "\t", " \n\t", "\r\n"][i % 5].repeat(run));
    }
    push("whitespace runs", s);
    push("leading spaces", " ".repeat(20_000) + &prose(1500, " "));
    push("leading newlines", "\n".repeat(15_000) + &prose(1500, " "));
    push("only spaces", " ".repeat(20_000));
    push("giant word", "a".repeat(20_000));
    push("giant alnum", "abc123XYZ".repeat(1250));
    push("giant word then prose", "q".repeat(15_000) + " " + &prose(1500, " "));
    push("prose then giant word", prose(1500, " ") + " " + &"z".repeat(15_000));
    push("cjk", "中文字符信息检索图书馆。".repeat(2000));
    push("cjk spaced", "中文 字符 信息 检索 图书馆 ".repeat(1500));
    push("kana", "ひらがなカタカナ ".repeat(1500));
    push("hangul", "한국어 정보 검색 ".repeat(1500));
    push("emoji", "😀👍🏽👨‍👩‍👧 ".repeat(1500));
    push("emoji run", "😀👍🏽👨‍👩‍👧".repeat(1500));
    push("combining after spaces", "cafe\u{301} \u{301}x \u{308}\u{301}y na\u{303}o ".repeat(1500));
    push("combining run", "e\u{301}\u{301}\u{302}\u{308}".repeat(3000));
    push("accents", "Éléphant naïve façade Ångström ΣΊΣΥΦΟΣ İstanbul ﬁnal ".repeat(750));
    push("punctuation run", "!".repeat(20_000));
    push("mixed punctuation", "...,,,;;;!!!???---___((()))[[[]]]<<<>>>".repeat(750));
    push("dotted", "a.b,c;d:e!f?g-h_i(j)k[l]m".repeat(1500));
    push("digits", "123 4567 89012345 6.78 9,012 ".repeat(1500));
    push("digit run", "1234567890".repeat(3000));
    push("contractions", "it's don't we'll they've I'm she'd 's 't ".repeat(1500));
    push("controls", "a\u{1}b\u{b}c\u{c}d\u{85}e\u{a0}f\u{3000}g\u{2028}h\u{7f}i\0j\u{fffd}k ".repeat(1500));
    push("meta chars", "▁a ▁▁b Ġc ▁ ▁▁ d▁e ".repeat(1500));
    push("special literals", "[CLS] a [SEP][MASK]b <s>x</s> <unk> <|endoftext|>y<|im_start|> Data Base Foo <q> ".repeat(750));
    push("special glued", "[MASK]".repeat(4000));
    push("endoftext glued", "<|endoftext|>".repeat(2500));
    t
}

/// Texts whose length, or whose whitespace, sits right at the first budgets.
fn budget_texts() -> Vec<(String, String)> {
    let mut out = Vec::new();
    // The first budgets for n = 1 and 7 (4096), 256 (6144) and 512 (12288), and the second for
    // n = 1 and 7 (16384).
    for budget in [4096usize, 6144, 12288, 16384] {
        for delta in [-1i64, 0, 1, 2] {
            let len = (budget as i64 + delta) as usize;
            let base: String = "word ".repeat(len / 5 + 2);
            out.push((format!("len {len}"), base[..len].to_string()));
            // A space exactly at the budget position, words without spaces elsewhere.
            let mut s = "x".repeat(len);
            s.push(' ');
            s.push_str(&"y".repeat(500));
            out.push((format!("space at {len}"), s));
            // A multibyte char straddling the budget, spaces around.
            let mut s = "ab ".repeat(len / 3);
            s.truncate(len.saturating_sub(1));
            s.push_str("中é 😀 ");
            s.push_str(&"cd ".repeat(400));
            out.push((format!("multibyte at {len}"), s));
            // A combining mark right after a space at the budget.
            let mut s = "ab ".repeat(len / 3 + 1);
            s.truncate(len);
            s.push_str(" \u{301}\u{301}e ");
            s.push_str(&"ef ".repeat(400));
            out.push((format!("mark at {len}"), s));
        }
    }
    out
}

const FRAGMENTS: &[&str] = &[
    " ", " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\r", ".", ",", "!", "...", "?!", "-", "_", "'s",
    "'ll", "(", ")", "[", "]", "<", ">", "/", "12345", "7", "中文", "字", "ひらがな", "한국어", "😀",
    "👍🏽", "👨‍👩‍👧", "\u{301}", "e\u{301}", "\u{308}\u{301}", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}",
    "\u{b}", "\u{c}", "\u{1}", "\u{7f}", "\u{fffd}", "\0", "▁", "▁▁", "Ġ", "[CLS]", "[MASK]", "<s>",
    "</s>", "<unk>", "<|endoftext|>", "<|im_start|>", "Data Base", "Foo", "<q>", "ΣΊΣΥΦΟΣ", "İ", "ﬁ",
    "Don't", "it's", "x",
];

fn fuzz_texts(seed: u64, count: usize, max_len: usize) -> Vec<String> {
    let words = words();
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let target = rng.below(max_len);
            let mut s = String::new();
            while s.len() < target {
                match rng.below(20) {
                    0..=8 => s.push_str(&words[rng.below(words.len())]),
                    9 => {
                        let run = [10, 50, 300, 1000][rng.below(4)];
                        s.push_str(&[" ", "\n", "\t", " \n"][rng.below(4)].repeat(run));
                    }
                    10 => {
                        let run = [20, 99, 100, 101, 150][rng.below(5)];
                        s.push_str(&["a", "ab1", "x9"][rng.below(3)].repeat(run));
                    }
                    11 => s.push_str(&"!.,-"[rng.below(4)..][..1].repeat(rng.below(200) + 1)),
                    _ => s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]),
                }
            }
            s
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// tokenizers

fn real(dir: &Path) -> Tokenizer {
    load_tokenizer(&dir.join("tokenizer.json"), None).unwrap()
}

fn bert_family() -> Vec<(String, Tokenizer)> {
    let mut out = Vec::new();
    for (name, dir) in [("minilm", lr_testkit::dense_model_dir()), ("splade-tiny", lr_testkit::sparse_model_dir())] {
        let tok = real(&dir);
        out.push((name.to_string(), tok.clone()));
        out.push((format!("{name}+trunc-256"), load_tokenizer(&dir.join("tokenizer.json"), Some(256)).unwrap()));
        if name != "minilm" {
            continue; // the same BERT pipeline and vocabulary: the variants once are enough
        }
        let mut t = tok.clone();
        t.with_normalizer(Some(BertNormalizer::new(false, true, Some(false), false))).unwrap();
        out.push((format!("{name}+cased-unclean"), t));
        let mut t = tok.clone();
        t.add_tokens([AddedToken::from("Foo", false).normalized(false), AddedToken::from("Data Base", false)]).unwrap();
        t.add_special_tokens([AddedToken::from("<q>", true)]).unwrap();
        out.push((format!("{name}+added"), t));
        let mut t = tok.clone();
        t.add_special_tokens([AddedToken::from("<mask>", true).lstrip(true).rstrip(true).single_word(true)]).unwrap();
        out.push((format!("{name}+strip-token"), t));
    }
    out
}

fn wordlevel_family() -> Vec<(String, Tokenizer)> {
    let root = lr_testkit::tiny_models_dir();
    vec![
        ("tiny-llama".to_string(), real(&root.join("tiny-llama"))),
        ("tiny-llama-lora".to_string(), real(&root.join("tiny-llama-lora"))),
    ]
}

/// Trains `tok`'s BPE model on CISI. `byte_level`: on the documents as they are, every other one
/// with its sentences on separate lines (so that whitespace and punctuation+newline pieces like
/// `.\n` exist); otherwise with whitespace runs as single spaces (merges.txt, read back for the
/// SentencePiece model, is split on whitespace).
fn train(tok: &mut Tokenizer, vocab_size: usize, byte_level: bool) {
    let alphabet: HashSet<char> = if byte_level { ByteLevel::alphabet().into_iter().collect() } else { HashSet::new() };
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(alphabet)
        .build()
        .into();
    let docs: Vec<String> = cisi_docs()
        .iter()
        .take(600)
        .enumerate()
        .map(|(i, d)| match (byte_level, i % 2) {
            (true, 0) => d.clone(),
            (true, _) => d.replace(". ", ".\n").replace(", ", ",\n\n"),
            (false, _) => d.split_whitespace().collect::<Vec<_>>().join(" "),
        })
        .collect();
    tok.train(&mut trainer, docs.iter()).unwrap();
}

fn byte_level_family() -> Vec<(String, Tokenizer)> {
    static F: OnceLock<Vec<(String, Tokenizer)>> = OnceLock::new();
    F.get_or_init(build_byte_level_family).clone()
}

fn build_byte_level_family() -> Vec<(String, Tokenizer)> {
    let specials = [
        AddedToken::from("<|endoftext|>", true),
        AddedToken::from("<|im_start|>", true),
        AddedToken::from("<|im_end|>", true),
    ];
    let mut out = Vec::new();

    let mut gpt2 = Tokenizer::new(BPE::default());
    gpt2.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    train(&mut gpt2, 3000, true);
    gpt2.add_special_tokens(specials.clone()).unwrap();
    out.push(("gpt2-bytelevel".to_string(), gpt2));

    let split = |p: &str| Split::new(SplitPattern::Regex(p.into()), SplitDelimiterBehavior::Isolated, false).unwrap();
    let seq = |p: &str| {
        PreTokenizerWrapper::Sequence(PreSeq::new(vec![
            PreTokenizerWrapper::Split(split(p)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
        ]))
    };
    let mut qwen = Tokenizer::new(BPE::default());
    qwen.with_normalizer(Some(NFC)).unwrap();
    qwen.with_pre_tokenizer(Some(seq(QWEN2)));
    train(&mut qwen, 3000, true);
    qwen.add_special_tokens(specials.clone()).unwrap();
    // "." followed by newlines is one piece: a cut between them would change the ids.
    assert!(qwen.token_to_id(".Ċ").is_some() && qwen.token_to_id(",ĊĊ").is_some());
    out.push(("qwen2-bytelevel".to_string(), qwen.clone()));

    let mut llama3 = qwen.clone();
    llama3.with_normalizer(None::<NFC>).unwrap();
    llama3.with_pre_tokenizer(Some(seq(LLAMA3)));
    out.push(("llama3-bytelevel".to_string(), llama3));

    let mut o200k = qwen.clone();
    o200k.with_pre_tokenizer(Some(seq(O200K)));
    out.push(("o200k-bytelevel".to_string(), o200k));

    // Char-rewriting normaliser: X must be ASCII graphic.
    let mut nfkc = qwen.clone();
    nfkc.with_normalizer(Some(NormSeq::new(vec![NFKC.into(), Lowercase.into()]))).unwrap();
    out.push(("qwen2+nfkc-lower".to_string(), nfkc));
    out
}

/// SentencePiece-style BPE: `▁word` pieces, byte fallback, whitespace-run pieces, and two pieces
/// that join a word's end with the next word (`s▁`, `e▁t`), merged first, so that a cut after
/// `s` or `e` would change the ids.
fn sentencepiece_model() -> BPE {
    let mut t = Tokenizer::new(BPE::default());
    t.with_normalizer(Some(NormSeq::new(vec![Prepend::new("▁".into()).into(), Replace::new(" ", "▁").unwrap().into()]))).unwrap();
    t.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Never, true)));
    train(&mut t, 2500, false);
    let ModelWrapper::BPE(trained) = t.get_model() else { unreachable!() };
    let dir = std::env::temp_dir().join(format!("lr-prefix-sp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    trained.save(&dir, None).unwrap();
    let (trained_vocab, trained_merges) =
        BPE::read_file(dir.join("vocab.json").to_str().unwrap(), dir.join("merges.txt").to_str().unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].iter().map(|s| s.to_string()).collect();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let mut by_id: Vec<(&String, &u32)> = trained_vocab.iter().collect();
    by_id.sort_by_key(|p| *p.1);
    tokens.extend(by_id.into_iter().map(|p| p.0.clone()));
    let mut extra_merges: Vec<(String, String)> = vec![("s".into(), "▁".into()), ("e".into(), "▁t".into())];
    tokens.extend(["s▁", "e▁t"].map(String::from));
    for (a, b) in [("▁", "▁"), ("▁▁", "▁▁"), ("▁▁▁▁", "▁▁▁▁")] {
        if !tokens.contains(&format!("{a}{b}")) {
            tokens.push(format!("{a}{b}"));
        }
        extra_merges.push((a.into(), b.into()));
    }
    assert!(tokens.contains(&"▁t".to_string()) && tokens.contains(&"▁".to_string()));
    let mut vocab = Vocab::default();
    for t in tokens {
        let id = vocab.len() as u32;
        vocab.entry(t).or_insert(id);
    }
    let mut merges = extra_merges;
    merges.extend(trained_merges);
    BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token("<unk>".into())
        .byte_fallback(true)
        .fuse_unk(true)
        .build()
        .unwrap()
}

fn sentencepiece_family() -> Vec<(String, Tokenizer)> {
    static F: OnceLock<Vec<(String, Tokenizer)>> = OnceLock::new();
    F.get_or_init(build_sentencepiece_family).clone()
}

fn build_sentencepiece_family() -> Vec<(String, Tokenizer)> {
    let model = sentencepiece_model();
    let specials = [AddedToken::from("<unk>", true), AddedToken::from("<s>", true), AddedToken::from("</s>", true)];
    let mut out = Vec::new();

    let mut llama2 = Tokenizer::new(model.clone());
    llama2.with_normalizer(Some(NormSeq::new(vec![Prepend::new("▁".into()).into(), Replace::new(" ", "▁").unwrap().into()]))).unwrap();
    llama2.add_special_tokens(specials.clone()).unwrap();
    out.push(("llama2-sentencepiece".to_string(), llama2.clone()));

    // Normalised added tokens ("▁<s>" after Prepend), as some Llama conversions have them.
    let mut t = Tokenizer::new(model.clone());
    t.with_normalizer(Some(NormSeq::new(vec![Prepend::new("▁".into()).into(), Replace::new(" ", "▁").unwrap().into()]))).unwrap();
    t.add_special_tokens(specials.clone().map(|a| a.normalized(true))).unwrap();
    out.push(("llama2+normalized-specials".to_string(), t));

    let mut mistral = Tokenizer::new(model.clone());
    mistral.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::First, false)));
    mistral.add_special_tokens(specials.clone()).unwrap();
    out.push(("mistral-metaspace".to_string(), mistral));

    let mut split = Tokenizer::new(model.clone());
    split.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    split.add_special_tokens(specials.clone()).unwrap();
    out.push(("metaspace-split".to_string(), split));

    let mut lower = llama2.clone();
    lower.with_normalizer(Some(NormSeq::new(vec![
        NFKC.into(),
        Lowercase.into(),
        Prepend::new("▁".into()).into(),
        Replace::new(" ", "▁").unwrap().into(),
    ]))).unwrap();
    out.push(("llama2+nfkc-lower".to_string(), lower));
    out
}

fn all_tokenizers() -> Vec<(String, Tokenizer)> {
    let mut v = bert_family();
    v.extend(wordlevel_family());
    v.extend(byte_level_family());
    v.extend(sentencepiece_family());
    for (name, tok) in &v {
        let c = PrefixCutter::new(tok);
        assert!(c.cuts(), "{name}: {:?}", c.why_not());
    }
    v
}

// ---------------------------------------------------------------------------------------------
// checks

fn first(mut ids: Vec<u32>, n: usize) -> Vec<u32> {
    ids.truncate(n);
    ids
}

/// Asserts the cut's first `n` ids equal the whole text's, for every n; returns how many of the
/// cuts were strictly shorter than the text.
fn check_text(name: &str, tok: &Tokenizer, cutter: &PrefixCutter, what: &str, text: &str) -> usize {
    let whole = plain_ids(tok, text).unwrap();
    let mut cut = 0;
    for n in NS {
        let p = cutter.prefix(tok, text, n).unwrap();
        assert!(std::ptr::eq(p.as_ptr(), text.as_ptr()) && text.starts_with(p));
        if p.len() < text.len() {
            cut += 1;
        }
        let cut_ids = plain_ids(tok, p).unwrap();
        // Stronger than needed, and what the cut rules promise: the prefix's ids are exactly
        // the first ids of the text (the 16-id margin would hide a wrong last id otherwise).
        if !whole.starts_with(&cut_ids) {
            let at = cut_ids.iter().zip(&whole).position(|(a, b)| a != b).unwrap_or(cut_ids.len());
            panic!(
                "{name}: {what} ({} bytes) cut at {} for n = {n}: the cut's {} ids are not a prefix of the \
                 text's {} (first difference at {at}); text around the cut: {:?}",
                text.len(),
                p.len(),
                cut_ids.len(),
                whole.len(),
                &text[floor(text, p.len().saturating_sub(40))..floor(text, p.len() + 40)]
            );
        }
        let got = first(cut_ids, n);
        if got != first(whole.clone(), n) {
            let want = first(whole.clone(), n);
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            panic!(
                "{name}: {what} ({} bytes) cut at {} for n = {n}: ids differ at {at} (got {} ids, want {}); \
                 text around the cut: {:?}",
                text.len(),
                p.len(),
                got.len(),
                want.len(),
                &text[floor(text, p.len().saturating_sub(40))..floor(text, p.len() + 40)]
            );
        }
    }
    cut
}

fn floor(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[test]
fn real_text_is_cut_exactly() {
    let texts = long_cisi_texts(40_000, 6);
    for (name, tok) in all_tokenizers() {
        let cutter = PrefixCutter::new(&tok);
        let mut cut = 0;
        for (i, t) in texts.iter().enumerate() {
            cut += check_text(&name, &tok, &cutter, &format!("cisi text {i}"), t);
        }
        // Every n on every 40 KB text is cut (the first budget is at most 12 KB).
        assert_eq!(cut, texts.len() * NS.len(), "{name}: only {cut} cuts");
    }
}

#[test]
fn edge_texts_are_cut_exactly() {
    let texts = edge_texts();
    for (name, tok) in all_tokenizers() {
        let cutter = PrefixCutter::new(&tok);
        let mut cut = 0;
        for (what, t) in &texts {
            cut += check_text(&name, &tok, &cutter, what, t);
        }
        eprintln!("{name}: {cut} of {} edge cuts shorter than the text", texts.len() * NS.len());
    }
}

#[test]
fn texts_around_the_budgets_are_cut_exactly() {
    let texts = budget_texts();
    for (name, tok) in all_tokenizers() {
        let cutter = PrefixCutter::new(&tok);
        for (what, t) in &texts {
            check_text(&name, &tok, &cutter, what, t);
        }
    }
}

/// Tiny budgets make every fuzz string (< 2.4 KB) go through the cut-and-grow loop, often many
/// times; 1000 strings per family, each against every tokenizer of it and every n.
fn fuzz(family: Vec<(String, Tokenizer)>, seed: u64) {
    let texts = fuzz_texts(seed, 1000, 2400);
    for (name, tok) in family {
        let cutters = [PrefixCutter::new(&tok).with_budget(16, 2), PrefixCutter::new(&tok).with_budget(300, 5)];
        let mut cut = 0;
        for (i, t) in texts.iter().enumerate() {
            cut += check_text(&name, &tok, &cutters[i % 2], &format!("fuzz {seed}/{i}"), t);
        }
        eprintln!("{name}: {cut} of {} fuzz cuts shorter than the text", texts.len() * NS.len());
        assert!(cut * 4 >= texts.len(), "{name}: only {cut} fuzz cuts");
    }
}

#[test]
fn fuzz_bert() {
    fuzz(bert_family(), 1);
}

#[test]
fn fuzz_wordlevel() {
    fuzz(wordlevel_family(), 2);
}

#[test]
fn fuzz_byte_level() {
    fuzz(byte_level_family(), 3);
}

#[test]
fn fuzz_sentencepiece() {
    fuzz(sentencepiece_family(), 4);
}

#[test]
fn the_sentencepiece_cross_word_pieces_fire_and_are_avoided() {
    // The adversarial pieces do fire on whole texts: a cut after `s` or `e` would be wrong.
    let (_, tok) = sentencepiece_family().remove(0);
    let ids = plain_ids(&tok, "is the best").unwrap();
    let s_meta = tok.token_to_id("s▁").unwrap();
    assert!(ids.contains(&s_meta), "{:?}", tok.encode("is the best", false).unwrap().get_tokens());
    let text = "ss ".repeat(20_000) + "the end";
    let cutter = PrefixCutter::new(&tok);
    // No cut after `s` anywhere: the only one is before the final "the end" (after "ss ")... which
    // follows a space, so there is none: the whole text comes back.
    assert_eq!(cutter.prefix(&tok, &text, 7).unwrap().len(), text.len());
    let text = "ab ".repeat(20_000);
    assert!(cutter.prefix(&tok, &text, 7).unwrap().len() <= 4096);
}

#[test]
fn unsupported_pipelines_keep_the_whole_text() {
    let tok = real(&lr_testkit::dense_model_dir());
    let text = "word ".repeat(10_000);
    let mut cases: Vec<(&str, Tokenizer)> = Vec::new();
    let mut t = tok.clone();
    t.with_truncation(Some(TruncationParams { max_length: 5, direction: TruncationDirection::Left, ..Default::default() }))
        .unwrap();
    cases.push(("left truncation", t));
    let mut t = tok.clone();
    t.with_padding(Some(PaddingParams::default()));
    cases.push(("padding", t));
    let mut t = tok.clone();
    t.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::digits::Digits::new(true)));
    cases.push(("digits pre-tokenizer", t));
    let mut t = tok.clone();
    let unknown = Split::new(SplitPattern::Regex(r"\w+|\s+".into()), SplitDelimiterBehavior::Isolated, false).unwrap();
    t.with_pre_tokenizer(Some(unknown));
    cases.push(("unknown regex", t));
    let mut t = tok.clone();
    t.with_normalizer(Some(Replace::new("a", "b").unwrap())).unwrap();
    cases.push(("other Replace", t));
    let mut t = byte_level_family().remove(1).1;
    t.add_special_tokens([AddedToken::from("a b", true)]).unwrap();
    cases.push(("whitespace in an added token, no other cut", t));
    let (_, sp) = sentencepiece_family().remove(0);
    let ModelWrapper::BPE(bpe) = sp.get_model() else { unreachable!() };
    let mut dropout = bpe.clone();
    dropout.dropout = Some(0.5);
    let mut t = sp.clone();
    t.with_model(dropout);
    cases.push(("BPE dropout", t));
    for (what, t) in cases {
        let c = PrefixCutter::new(&t);
        assert!(!c.cuts(), "{what} must not be cut");
        eprintln!("{what}: {}", c.why_not().unwrap());
        assert_eq!(c.prefix(&t, &text, 7).unwrap().len(), text.len(), "{what}");
        assert_eq!(prefix_for_tokens(&t, &text, 7).unwrap().len(), text.len(), "{what}");
    }
}

#[test]
fn short_texts_come_back_without_tokenizing() {
    let tok = real(&lr_testkit::dense_model_dir());
    let cutter = PrefixCutter::new(&tok);
    let text = "word ".repeat(2000); // 10 KB: under 24 × 512
    let calls = std::cell::Cell::new(0);
    let got = cutter.prefix_by(&text, 512, |_| {
        calls.set(calls.get() + 1);
        Ok(0)
    });
    assert_eq!(got.unwrap().len(), text.len());
    assert_eq!(calls.get(), 0);
    assert_eq!(prefix_for_tokens(&tok, &text, 512).unwrap().len(), text.len());
}

#[test]
fn query_tokenizer_first_ids_are_the_truncated_ids() {
    let mut texts = long_cisi_texts(30_000, 2);
    texts.extend(edge_texts().into_iter().step_by(2).map(|p| p.1));
    texts.extend(fuzz_texts(9, 200, 2400));
    // minilm and its variants (fast path on and off), GPT-2 and Qwen2 byte-level BPE.
    let mut family: Vec<_> = bert_family().into_iter().take(5).collect();
    family.extend(byte_level_family().into_iter().take(2));
    for (name, tok) in family {
        let q = QueryTokenizer::new(tok);
        for t in &texts {
            let whole = q.ids(t).unwrap();
            for n in NS {
                assert_eq!(q.first_ids(t, n).unwrap(), first(whole.clone(), n), "{name}: n = {n}, {:.60?}", t);
            }
        }
    }
}

/// A 14 MB document (CISI, concatenated): the prefix tokenized is a few KB, and its first 512
/// ids are the whole text's (on BERT, whose exact ASCII fast path can afford the whole 14 MB).
#[test]
fn a_14_mb_text_is_cut_to_a_few_kb() {
    let text = lr_testkit::huge_cisi_text(14_000_000);
    let head = &text[..floor(&text, 200_000)];
    for (name, tok) in all_tokenizers() {
        let cutter = PrefixCutter::new(&tok);
        let head_ids = plain_ids(&tok, head).unwrap();
        for n in [256, 512] {
            let p = cutter.prefix(&tok, &text, n).unwrap();
            assert!(p.len() <= 24 * 512, "{name}: n = {n}: {} bytes tokenized", p.len());
            assert!(p.len() >= 4096, "{name}: n = {n}: {} bytes", p.len());
            let p2 = prefix_for_tokens(&tok, &text, n).unwrap();
            assert_eq!(p2.len(), p.len());
            let got = first(plain_ids(&tok, p).unwrap(), n);
            assert!(got.len() >= n.min(256), "{name}");
            assert_eq!(got, first(head_ids.clone(), n), "{name}: n = {n}");
        }
    }
    for (name, tok) in bert_family().into_iter().take(1) {
        let q = QueryTokenizer::new(tok.clone());
        let whole = q.fast_ids(&text).expect("CISI is ASCII without literal special tokens");
        for n in NS {
            let p = prefix_for_tokens(&tok, &text, n).unwrap();
            assert_eq!(first(plain_ids(&tok, p).unwrap(), n), first(whole.clone(), n), "{name}: n = {n}");
            assert_eq!(q.first_ids(&text, n).unwrap(), first(whole.clone(), n), "{name}: n = {n}");
        }
    }
}

/// Nothing over `MAX_TOKENIZED_BYTES` reaches the tokenizer, which holds ≈ 55× a text and
/// aborts the process when an allocation fails (in a backend: a restart of the whole server).
/// A giant run without a safe cut (non-ASCII letters: no word break, no ASCII long-word cut) is
/// refused with an error, without tokenizing anything; so is any text over the bound for a
/// tokenizer that is never cut.
#[test]
fn texts_without_a_cut_within_the_bound_are_refused() {
    let tok = real(&lr_testkit::dense_model_dir());
    let cutter = PrefixCutter::new(&tok);
    let run = "é".repeat(lr_tokenizer::MAX_TOKENIZED_BYTES / 2 + 1); // just over the bound
    let calls = std::cell::Cell::new(0);
    let err = cutter
        .prefix_by(&run, 512, |_| {
            calls.set(calls.get() + 1);
            Ok(0)
        })
        .unwrap_err();
    assert!(err.contains("too long to tokenize"), "{err}");
    assert_eq!(calls.get(), 0, "nothing is tokenized when no cut exists");
    assert!(cutter.bounded(&run).is_err());
    assert!(plain_ids(&tok, &run).is_err());
    let q = QueryTokenizer::new(tok.clone());
    assert!(q.first_ids(&run, 512).unwrap_err().contains("too long to tokenize"));
    // One byte under the bound it is tokenized whole, as before (one unknown token).
    let under = "é".repeat(lr_tokenizer::MAX_TOKENIZED_BYTES / 2 - 1);
    assert_eq!(q.first_ids(&under, 512).unwrap().len(), 1);

    // Cuts exist but the bound holds too few ids: giant words separated by spaces.
    let small = cutter.clone().with_max_bytes(64 * 1024);
    let words = ("é".repeat(600) + " ").repeat(200); // 240 KB, one id per 1.2 KB
    assert!(small.prefix(&tok, &words, 512).unwrap_err().contains("512 tokens"));
    // The same text is fine when a prefix within the bound has the ids wanted.
    let p = small.prefix(&tok, &words, 16).unwrap();
    assert!(p.len() <= 64 * 1024);
    assert_eq!(first(plain_ids(&tok, p).unwrap(), 16), vec![tok.token_to_id("[UNK]").unwrap(); 16]);

    // A tokenizer that is never cut: whole texts up to the bound, an error above it.
    let mut uncut = tok.clone();
    uncut.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::digits::Digits::new(true)));
    let uncut_cutter = PrefixCutter::new(&uncut).with_max_bytes(64 * 1024);
    assert!(!uncut_cutter.cuts());
    let prose = "word ".repeat(14_000); // 70 KB
    assert_eq!(uncut_cutter.prefix(&uncut, &prose[..60_000], 512).unwrap().len(), 60_000);
    let err = uncut_cutter.prefix(&uncut, &prose, 512).unwrap_err();
    assert!(err.contains("never cut"), "{err}");
}

/// `bounded` keeps the longest prefix within the bound whose ids are an exact prefix of the
/// text's: what a fit counts of a document over 4 MiB.
#[test]
fn bounded_is_an_exact_prefix_within_the_bound() {
    let text = lr_testkit::huge_cisi_text(300_000);
    for (name, tok) in bert_family().into_iter().take(1) {
        let cutter = PrefixCutter::new(&tok).with_max_bytes(100_000);
        let b = cutter.bounded(&text).unwrap();
        assert!(b.len() <= 100_000 && b.len() > 99_000, "{name}: {} bytes", b.len());
        let q = QueryTokenizer::new(tok.clone());
        let whole = q.fast_ids(&text).unwrap();
        let ids = plain_ids(&tok, b).unwrap();
        assert_eq!(ids[..], whole[..ids.len()], "{name}");
        assert_eq!(PrefixCutter::new(&tok).bounded(&text).unwrap().len(), text.len());
    }
}

/// The last budget searched is the bound itself, whatever the text's length: a text whose only
/// cut lies between the last budget under the bound and the bound is cut there, not refused (a
/// review found budgets jumping from below the bound to past the text's end).
#[test]
fn the_bound_itself_is_searched() {
    let tok = real(&lr_testkit::dense_model_dir());
    let cutter = PrefixCutter::new(&tok).with_budget(4096, 24).with_max_bytes(100_000);
    // Budgets 4,096, 16,384 and 65,536 find no cut in the run; the next, 262,144, would pass
    // the text's end; the bound, 100,000, holds the words after the run.
    let mut text = "é".repeat(35_000);
    while text.len() < 150_000 {
        text.push_str(" word");
    }
    let p = cutter.prefix(&tok, &text, 8).unwrap();
    assert!(p.len() > 70_000 && p.len() <= 100_000, "{} bytes", p.len());
    assert_eq!(first(plain_ids(&tok, p).unwrap(), 8), first(plain_ids(&tok, &text).unwrap(), 8));
}

/// A text first cut to `bounded_reads()` bytes (what a fit reads of a long document from its
/// table) is bounded exactly as the whole text; one byte fewer can move the cut inside a long word.
#[test]
fn bounded_reads_no_further_than_it_says() {
    let mut moved = 0;
    for (name, tok) in bert_family() {
        let cutter = PrefixCutter::new(&tok).with_max_bytes(1_000);
        let reads = cutter.bounded_reads();
        assert!(reads > 1_000, "{name}: {reads}");
        for lead in 0..40 {
            for tail in ["a".repeat(3_000), "é ".repeat(1_500), "word, ".repeat(500), format!("{}{}", "b".repeat(980), " c".repeat(500))] {
                let text = format!("{}{tail}", "x ".repeat(lead));
                // The cut, or that there is none (an error's message gives the length it was given).
                let whole = cutter.bounded(&text).ok();
                for extra in [0, 1, 7, 100] {
                    let end = (reads + extra).min(text.len());
                    let end = (0..=end).rev().find(|&e| text.is_char_boundary(e)).unwrap();
                    assert_eq!(cutter.bounded(&text[..end]).ok(), whole, "{name}: lead {lead}, {end} bytes");
                }
                let short = (0..reads).rev().find(|&e| text.is_char_boundary(e)).unwrap();
                moved += (cutter.bounded(&text[..short]).ok() != whole) as usize;
            }
        }
    }
    assert!(moved > 0, "no text where the bytes past the bound matter");
}
