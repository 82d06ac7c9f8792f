#!/usr/bin/env python3
"""Write tiny decoder-LLM checkpoints (Hugging Face layout) with deterministic random weights.

    python3 scripts/make_test_models.py --out target/lr-test-models
    python3 scripts/make_test_models.py --out target/lr-test-models --real qwen2.5-0.5b   # benchmarks only
    python3 scripts/make_test_models.py --out target/lr-bench --real pe-rank-qwen2.5-0.5b  # bench-rerank

Only numpy and the standard library are used; safetensors and tokenizer.json are written by hand.
The output is byte-identical from run to run (fixed seeds, fixed tensor order, no timestamps).

Tiny models (DIR/<name>):
  tiny-llama       LlamaForCausalLM, F32, one model.safetensors, llama3 rope scaling, untied lm_head
  tiny-mistral     MistralForCausalLM, F32, two shards + model.safetensors.index.json, GQA g=4, untied
  tiny-qwen2       Qwen2ForCausalLM, BF16, q/k/v biases, tied embeddings (no lm_head.weight)
  tiny-qwen3       Qwen3ForCausalLM, F16, head_dim 32 != 64/4, q_norm/k_norm, tied embeddings
  tiny-llama-lora  PEFT LoRA adapter for tiny-llama (r=4, alpha=8, all 7 projections, B != 0),
                   with its own tokenizer.json = base tokenizer + Lowercase normalizer
  pe-rank-tiny     PE-Rank reranker (embed_mistral: Mistral + mlp2x_gelu projector E=32 -> H=64),
                   BF16, two shards, legacy-sentencepiece-style BPE tokenizer.json with
                   <PLACEHOLDER>/<RANK>, Mistral-v0.2 chat template (liuqi6777/pe-rank-mistral-jina layout)
  jina-bert-tiny   JinaBERT (ALiBi, GEGLU, post-LN; jina-embeddings-v2-base-en layout), F32, hidden 32,
                   WordPiece tokenizer.json, 1_Pooling (mean); PE-Rank's passage encoder

Weights: linear/embedding ~ N(0, 0.02), biases ~ N(0, 0.02), RMSNorm weights ~ 1 + N(0, 0.1),
LoRA A and B ~ N(0, 0.05).  Linear weights are [out, in] as in torch.nn.Linear.
pe-rank-tiny and jina-bert-tiny use their own scales (PE_RANK["std"], JINA["std"]).

The companion tests/decoder_reference/reference.py computes the expected outputs from these files.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

# --------------------------------------------------------------------------------------------
# tokenizer

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
PUNCT = [".", ",", "?", "!", ":", ";", "'", "-", "(", ")", '"']
WORDS = """
the of and to a in is it you that he was for on are with as i his they be at one have this from or
had by hot word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water than
call first who may down side been now find any new work part take get place made live where after
back little only round man year came show every good me give our under name very through just form
sentence great think say help low line differ turn cause much mean before move right boy old too same
tell does set three want air well also play small end put home read hand port large spell add even
land here must big high such follow act why ask men change went light kind off need house picture try
us again animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye never
last let thought city tree cross farm hard start might story saw far sea draw left late run while
press close night real life few north open seem together next white children begin got walk example
ease paper group always music those both mark often letter until mile river car feet care second
book carry took science eat room friend began idea fish mountain stop once base hear horse cut sure
watch color face wood main enough plain girl usual young ready above ever red list though feel talk
bird soon body dog family direct pose leave song measure door product black short numeral class wind
search query document passage retrieval represent instruction given relevant question library index
paris london france english monday capital
""".split()
# Capitalised forms: a Lowercase normalizer (the LoRA adapter's tokenizer) maps them onto the
# lowercase entries above, so lowercasing changes the ids of e.g. "The capital of France is Paris".
CAPITALISED = ["The", "A", "In", "What", "How", "Who", "Where", "Paris", "London", "France",
               "English", "Monday"]


def _dedup(seq):
    seen, out = set(), []
    for s in seq:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def vocab_tokens(vocab_size):
    """Token strings by id: specials, punctuation, real words, capitalised words, then tok{id}."""
    toks = _dedup(SPECIALS + PUNCT + WORDS + CAPITALISED)
    assert len(toks) == len(SPECIALS) + len(PUNCT) + len(_dedup(WORDS)) + len(CAPITALISED)
    assert all(c.lower() in toks for c in CAPITALISED)
    if len(toks) > vocab_size - 16:
        raise SystemExit(f"vocab_size {vocab_size} too small for {len(toks)} real tokens")
    toks += [f"tok{i}" for i in range(len(toks), vocab_size)]
    assert len(toks) == vocab_size and len(set(toks)) == vocab_size
    return toks


def special(tok, type_id):
    """A TemplateProcessing piece: a special token."""
    return {"SpecialToken": {"id": tok, "type_id": type_id}}


def seq(name, type_id):
    """A TemplateProcessing piece: the sequence."""
    return {"Sequence": {"id": name, "type_id": type_id}}


def added_token_config(content):
    """tokenizer_config.json's added_tokens_decoder entry of a special token."""
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


def tokenizer_json(vocab_size, lowercase):
    """A Hugging Face tokenizer.json (format "1.0") with a WordLevel model."""
    toks = vocab_tokens(vocab_size)
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, t in enumerate(SPECIALS)
    ]

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"} if lowercase else None,
        "pre_tokenizer": {"type": "Whitespace"},
        # Llama-style: bos only, no eos appended by the tokenizer.
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("<s>", 0), seq("A", 0)],
            "pair": [special("<s>", 0), seq("A", 0), special("<s>", 1), seq("B", 1)],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS_ID], "tokens": ["<s>"]}},
        },
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(toks)},
                  "unk_token": "<unk>"},
    }


TOKENIZER_CONFIG = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "add_bos_token": True,
    "add_eos_token": False,
    "model_max_length": 512,
    "tokenizer_class": "PreTrainedTokenizerFast",
}

# --------------------------------------------------------------------------------------------
# safetensors (https://github.com/huggingface/safetensors: u64 LE header size, JSON header,
# little-endian row-major data; data_offsets are relative to the end of the header)

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def f32_to_bf16_bits(a):
    """bf16 = upper 16 bits of the f32 pattern, rounded to nearest, ties to even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    if not np.all(np.isfinite(a)):
        raise ValueError("non-finite value")
    lsb = (u >> np.uint32(16)) & np.uint32(1)
    return ((u + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype("<u2")


def _selftest_bf16():
    vals = np.array([1.0, -2.5, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-9, 0.0], np.float32)
    got = f32_to_bf16_bits(vals).tolist()
    # 1+2^-8 is a tie between 0x3F80 and 0x3F81 -> even (0x3F80); 1+3*2^-8 -> 0x3F82 (even);
    # 1+2^-9 is below the halfway point -> 0x3F80.
    assert got == [0x3F80, 0xC020, 0x3F80, 0x3F82, 0x3F80, 0x0000], [hex(g) for g in got]


def encode(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        h = a.astype("<f2")
        assert np.all(np.isfinite(h))
        return h.tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(a).tobytes()
    raise ValueError(dtype)


def write_safetensors(path, specs, produce):
    """specs: [(name, shape, dtype)] in file order; produce(name, shape) yields float32 chunks
    (row blocks, C order) whose concatenation is the tensor. Returns the data byte count."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dtype in specs:
        n = DTYPE_SIZE[dtype] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape, dtype in specs:
            written = 0
            for chunk in produce(name, shape):
                b = encode(chunk, dtype)
                f.write(b)
                written += len(b)
            assert written == header[name]["data_offsets"][1] - header[name]["data_offsets"][0], name
    os.replace(tmp, path)
    return off


def write_json(path, obj, indent=2):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------------------------
# model description


def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def tensor_specs(cfg, dtype):
    """[(name, shape, kind)] in Hugging Face naming; kind picks the init distribution."""
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    mt = cfg["model_type"]
    qkv_bias = mt == "qwen2" or bool(cfg.get("attention_bias"))
    o_bias = mt != "qwen2" and bool(cfg.get("attention_bias"))
    out = [("model.embed_tokens.weight", (v, h), "linear")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (h,), "norm"))
        for proj, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            out.append((p + f"self_attn.{proj}_proj.weight", (rows, h), "linear"))
            if qkv_bias:
                out.append((p + f"self_attn.{proj}_proj.bias", (rows,), "bias"))
        out.append((p + "self_attn.o_proj.weight", (h, nh * hd), "linear"))
        if o_bias:
            out.append((p + "self_attn.o_proj.bias", (h,), "bias"))
        if mt == "qwen3":
            out.append((p + "self_attn.q_norm.weight", (hd,), "norm"))
            out.append((p + "self_attn.k_norm.weight", (hd,), "norm"))
        out.append((p + "post_attention_layernorm.weight", (h,), "norm"))
        out.append((p + "mlp.gate_proj.weight", (inter, h), "linear"))
        out.append((p + "mlp.up_proj.weight", (inter, h), "linear"))
        out.append((p + "mlp.down_proj.weight", (h, inter), "linear"))
    out.append(("model.norm.weight", (h,), "norm"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h), "linear"))
    return [(n, s, k, dtype) for n, s, k in out]


def gen_tensor(rng, shape, kind):
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if kind in ("linear", "bias"):
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "lora":
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)
    raise ValueError(kind)


def llama3_regimes(cfg):
    """Classify each rotary frequency as HF's llama3 rope scaling does: kept / smoothed / scaled."""
    rs = cfg["rope_scaling"]
    hd = head_dim_of(cfg)
    inv = (1.0 / (np.float32(cfg["rope_theta"]) ** (np.arange(0, hd, 2).astype(np.float32) / hd))
           ).astype(np.float32)
    wavelen = 2 * math.pi / inv.astype(np.float64)
    old = rs["original_max_position_embeddings"]
    low_wl, high_wl = old / rs["low_freq_factor"], old / rs["high_freq_factor"]
    return ["kept" if w < high_wl else "scaled" if w > low_wl else "smoothed" for w in wavelen]


def base_config(arch, mt, **kw):
    cfg = {
        "architectures": [arch],
        "model_type": mt,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "use_cache": True,
    }
    cfg.update(kw)
    return cfg


TINY_VOCAB = 500

TINY = {
    "tiny-llama": dict(
        seed=1001, dtype="F32", shards=1,
        config=base_config(
            "LlamaForCausalLM", "llama",
            hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=TINY_VOCAB, max_position_embeddings=512, rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            attention_bias=False, attention_dropout=0.0, mlp_bias=False, pretraining_tp=1,
            tie_word_embeddings=False, torch_dtype="float32")),
    "tiny-mistral": dict(
        seed=1002, dtype="F32", shards=2,
        config=base_config(
            "MistralForCausalLM", "mistral",
            hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=2,
            vocab_size=TINY_VOCAB, max_position_embeddings=512, rms_norm_eps=1e-5,
            rope_theta=10000.0, rope_scaling=None, sliding_window=None, attention_dropout=0.0,
            tie_word_embeddings=False, torch_dtype="float32")),
    "tiny-qwen2": dict(
        seed=1003, dtype="BF16", shards=1,
        config=base_config(
            "Qwen2ForCausalLM", "qwen2",
            hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
            vocab_size=TINY_VOCAB, max_position_embeddings=512, rms_norm_eps=1e-6,
            rope_theta=1000000.0, rope_scaling=None,
            use_sliding_window=False, sliding_window=4096, max_window_layers=2,
            attention_dropout=0.0, tie_word_embeddings=True, torch_dtype="bfloat16")),
    "tiny-qwen3": dict(
        seed=1004, dtype="F16", shards=1,
        config=base_config(
            "Qwen3ForCausalLM", "qwen3",
            hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            vocab_size=TINY_VOCAB, max_position_embeddings=512, rms_norm_eps=1e-6,
            rope_theta=1000000.0, rope_scaling=None, attention_bias=False,
            use_sliding_window=False, sliding_window=None, max_window_layers=2,
            attention_dropout=0.0, tie_word_embeddings=True, torch_dtype="float16")),
}

LORA = dict(
    seed=1005, base="tiny-llama", r=4, alpha=8,
    targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


def write_model(root, name, spec):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    cfg, dtype = spec["config"], spec["dtype"]
    specs = tensor_specs(cfg, dtype)
    rng = np.random.default_rng(spec["seed"])
    # Generate everything up front, in file order (tiny models), so the bytes depend on the seed only.
    values = {n: gen_tensor(rng, s, k) for n, s, k, _ in specs}

    def produce(n, s):
        yield values[n]

    file_specs = [(n, s, dt) for n, s, _, dt in specs]
    for stale in [f for f in os.listdir(d) if f.endswith(".safetensors") or f.endswith(".index.json")]:
        os.remove(os.path.join(d, stale))
    if spec["shards"] == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), file_specs, produce)
    else:
        # Split on layer boundaries: embeddings + first half of the layers in shard 1.
        nl = cfg["num_hidden_layers"]
        first = {"model.embed_tokens.weight"} | {
            n for n, _, _ in file_specs
            if n.startswith("model.layers.") and int(n.split(".")[2]) < (nl + 1) // 2}
        groups = [[t for t in file_specs if t[0] in first], [t for t in file_specs if t[0] not in first]]
        assert spec["shards"] == 2 and all(groups)
        weight_map, total = {}, 0
        for k, g in enumerate(groups):
            fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
            total += write_safetensors(os.path.join(d, fname), g, produce)
            weight_map.update({n: fname for n, _, _ in g})
        write_json(os.path.join(d, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json(os.path.join(d, "config.json"), cfg)
    write_json(os.path.join(d, "tokenizer.json"), tokenizer_json(cfg["vocab_size"], lowercase=False))
    write_json(os.path.join(d, "tokenizer_config.json"), TOKENIZER_CONFIG)
    return d


def write_lora(root):
    base = TINY[LORA["base"]]["config"]
    d = os.path.join(root, LORA["base"] + "-lora")
    os.makedirs(d, exist_ok=True)
    h, inter, hd = base["hidden_size"], base["intermediate_size"], head_dim_of(base)
    nh, nkv, r = base["num_attention_heads"], base["num_key_value_heads"], LORA["r"]
    dims = {  # module -> (in, out)
        "q_proj": (h, nh * hd), "k_proj": (h, nkv * hd), "v_proj": (h, nkv * hd),
        "o_proj": (nh * hd, h), "gate_proj": (h, inter), "up_proj": (h, inter),
        "down_proj": (inter, h),
    }
    rng = np.random.default_rng(LORA["seed"])
    specs, values = [], {}
    for i in range(base["num_hidden_layers"]):
        for m in LORA["targets"]:
            blk = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            p = f"base_model.model.model.layers.{i}.{blk}.{m}."
            fin, fout = dims[m]
            for n, shape in ((p + "lora_A.weight", (r, fin)), (p + "lora_B.weight", (fout, r))):
                values[n] = gen_tensor(rng, shape, "lora")
                specs.append((n, shape, "F32"))
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), specs,
                      lambda n, s: iter([values[n]]))
    write_json(os.path.join(d, "adapter_config.json"), {
        "peft_type": "LORA",
        "r": LORA["r"],
        "lora_alpha": LORA["alpha"],
        "lora_dropout": 0.0,
        "target_modules": LORA["targets"],
        "base_model_name_or_path": LORA["base"],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "task_type": "FEATURE_EXTRACTION",
    })
    write_json(os.path.join(d, "tokenizer.json"), tokenizer_json(base["vocab_size"], lowercase=True))
    write_json(os.path.join(d, "tokenizer_config.json"), TOKENIZER_CONFIG)
    return d


# --------------------------------------------------------------------------------------------
# real-size shapes (speed benchmarks only; random weights, synthetic tokenizer)

REAL = {
    "qwen2.5-0.5b": dict(
        seed=2001,
        config=base_config(
            "Qwen2ForCausalLM", "qwen2",
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2,
            vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_theta=1000000.0, rope_scaling=None,
            use_sliding_window=False, sliding_window=32768, max_window_layers=24,
            attention_dropout=0.0, tie_word_embeddings=True, torch_dtype="bfloat16")),
    "llama-3.2-1b": dict(
        seed=2002,
        config=base_config(
            "LlamaForCausalLM", "llama",
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, head_dim=64,
            vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            attention_bias=False, attention_dropout=0.0, mlp_bias=False, pretraining_tp=1,
            tie_word_embeddings=True, torch_dtype="bfloat16")),
    # Llama-3-8B's vocabulary and width, so its query table's size (128,256 x 4,096: 1.05 GB in
    # f16), with one narrow layer: the 1 GB table check (benches/table_store_memory.py) needs
    # the table, not the model's speed.
    "llama-3-8b-vocab": dict(
        seed=2003,
        config=base_config(
            "LlamaForCausalLM", "llama",
            hidden_size=4096, intermediate_size=1024, num_hidden_layers=1,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128,
            vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
            rope_theta=500000.0, rope_scaling=None,
            attention_bias=False, attention_dropout=0.0, mlp_bias=False, pretraining_tp=1,
            tie_word_embeddings=True, torch_dtype="bfloat16")),
}


def chunked_weights(seed, specs):
    """Random real-size weights in row chunks (a few tens of MiB at a time): linear layers and
    biases N(0, 0.02), norms 1 + N(0, 0.1), drawn in tensor order from one generator."""
    rng = np.random.default_rng(seed)
    kinds = {n: k for n, _, k, _ in specs}
    std = {"linear": 0.02, "bias": 0.02, "norm": 0.1}
    block = 1 << 22  # elements per generated chunk

    def produce(n, shape):
        cols = shape[-1] if len(shape) > 1 else shape[0]
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        step = max(1, block // cols)
        for r0 in range(0, rows, step):
            x = rng.standard_normal((min(step, rows - r0), cols), dtype=np.float32)
            x *= np.float32(std[kinds[n]])
            if kinds[n] == "norm":
                x += np.float32(1.0)
            yield x

    return produce


def write_real(root, key, layers=None):
    spec = REAL[key]
    cfg = dict(spec["config"])
    if layers is not None:
        cfg["num_hidden_layers"] = layers
    d = os.path.join(root, "real-" + key)
    os.makedirs(d, exist_ok=True)
    specs = tensor_specs(cfg, "BF16")
    produce = chunked_weights(spec["seed"], specs)
    total = write_safetensors(os.path.join(d, "model.safetensors"),
                              [(n, s, dt) for n, s, _, dt in specs], produce)
    write_json(os.path.join(d, "config.json"), cfg)
    tcfg = dict(TOKENIZER_CONFIG, model_max_length=cfg["max_position_embeddings"])
    write_json(os.path.join(d, "tokenizer.json"), tokenizer_json(cfg["vocab_size"], False), indent=None)
    write_json(os.path.join(d, "tokenizer_config.json"), tcfg)
    print(f"{d}: {total / 2**30:.2f} GiB of bf16 weights, {cfg['num_hidden_layers']} layers")
    return d


# --------------------------------------------------------------------------------------------
# PE-Rank (arXiv 2406.14848): a tiny random checkpoint in the released layout of
# liuqi6777/pe-rank-mistral-jina (embed_mistral = Mistral + projector, full model, BF16, two
# shards), and a tiny random JinaBERT (jina-embeddings-v2-base-en's architecture) to serve as its
# passage encoder (hidden 32 = PE-Rank's embedding_size). tests/rerank_reference/reference.py
# computes the expected outputs; its README describes both.

SPIECE = "\u2581"  # sentencepiece's word-boundary marker "▁"
PE_PLACEHOLDER_TOKEN, PE_RANK_TOKEN = "<PLACEHOLDER>", "<RANK>"

# The original Mistral-7B-Instruct-v0.2 chat template (tokenizer_config.json of that model).
MISTRAL_V02_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)

# Pieces with the "▁" word prefix: the prompt's words, words of the reference queries and
# passages, a few common words, and "▁[" / "▁]" (the legacy tokenizer's "[" / "]" after a space
# or at the start of a segment).
PE_SP_WORDS = """
I will provide you with passages passage each a special token representing the enclosed in
followed by original text based on their relevance to search query Query relatively ordered above
output ranking descending order Only unique [ ] How how do embeddings speed up rerank reranking
effects of caffeine Caffeine on sleep Sleep quality blocks receptors brain which delays feeling
serves espresso late at night compress document into one vector for fast read all candidates once
and is when after avoided improves what capital France Paris this that are from as
""".split()
# Pieces without the prefix: what follows "[", a newline or "/" in the prompt, and a few suffixes.
PE_PLAIN_WORDS = ["INST", "Rank", "Pass", "age", "Search", "ing", "ed", "es", "er", "ly", "tion"]


def pe_rank_vocab():
    """Token strings by id and the BPE merges (strings "left right", in rank order).

    <unk>=0, <s>=1, </s>=2, the 256 byte tokens <0x00>..<0xFF> (3..258), the single characters
    "▁" and ASCII 33..126, then the multi-character pieces. Each piece w is built by the merge
    (w[:-1], w[-1]), so every prefix of a piece is a piece too; all "▁"-pieces are merged before
    (rank lower than) the plain ones. Digits are never merged (as in Llama/Mistral: " 10" is
    "▁", "1", "0"); "\\n" and non-ASCII characters fall back to bytes."""
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    toks += [SPIECE] + [chr(c) for c in range(33, 127)]
    have, merges = set(toks), []
    for words in ([SPIECE + w for w in PE_SP_WORDS], PE_PLAIN_WORDS):
        for w in words:
            assert not any(ch.isdigit() for ch in w), w
            for k in range(2, len(w) + 1):
                if w[:k] not in have:
                    have.add(w[:k])
                    toks.append(w[:k])
                    merges.append(f"{w[:k - 1]} {w[k - 1]}")
    assert len(set(toks)) == len(toks)
    return toks, merges


def pe_rank_tokenizer_json():
    """tokenizer.json as Hugging Face converts a LEGACY slow Llama/Mistral sentencepiece
    tokenizer: BPE with byte fallback, normalizer Prepend("▁") + Replace(" ", "▁"), no
    pre-tokenizer. The added tokens are split off before normalisation, so every segment between
    them gets its own "▁" prefix (legacy: "[<PLACEHOLDER>]" -> "▁[", <PLACEHOLDER>, "▁]")."""
    toks, merges = pe_rank_vocab()
    base = len(toks)

    def added(i, content):
        return {"id": i, "content": content, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False, "special": True}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
                         added(base, PE_PLACEHOLDER_TOKEN), added(base + 1, PE_RANK_TOKEN)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPIECE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("<s>", 0), seq("A", 0)],
            "pair": [special("<s>", 0), seq("A", 0), special("<s>", 1), seq("B", 1)],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS_ID], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPIECE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(toks)}, "merges": merges},
    }


def pe_rank_tokenizer_files(base):
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            "0": added_token_config("<unk>"), "1": added_token_config("<s>"), "2": added_token_config("</s>"),
            str(base): added_token_config(PE_PLACEHOLDER_TOKEN), str(base + 1): added_token_config(PE_RANK_TOKEN)},
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "chat_template": MISTRAL_V02_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 4096,
        "pad_token": "<unk>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    smap = {k: {"content": v, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False}
            for k, v in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    smap["pad_token"] = "<unk>"
    return config, smap


PE_RANK = dict(
    seed=1201,
    # std of each kind of tensor (norm weights are 1 + N(0, std)); chosen so that attention is
    # far from uniform and the decoding scores are well separated (reference.py asserts it).
    std={"embed": 0.5, "qk": 0.25, "vo": 0.15, "mlp": 0.15, "norm": 0.1, "lm_head": 0.02,
         "proj0_w": 1.0, "proj0_b": 0.1, "proj2_w": 0.15, "proj2_b": 0.02, "dummy": 0.02},
    config={
        "architectures": ["EmbedMistralForRankLM"],
        "model_type": "embed_mistral",
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 4096,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": None,  # base vocab + <PLACEHOLDER> + <RANK>, filled in from the tokenizer
        "encoder_name": "jinaai/jina-embeddings-v2-base-en",
        "encoder_pooling": "mean",
        "use_proj": True,
        "projector_type": "mlp2x_gelu",
        "embedding_size": 32,
        "tokenizer_padding_side": "left",
        "tokenizer_model_max_length": 4096,
        "tune_mlp_adapter": False,
        "freeze_backbone": False,
    },
)


def pe_rank_tensor_specs(cfg):
    """[(name, shape, kind)] in file order: Mistral (no biases), untied lm_head, the projector
    model.projector.{0,2} (Linear E->H, GELU, Linear H->H) and two small stand-ins for the frozen
    encoder the released checkpoint carries under model.encoder.encoder.* (a loader ignores them)."""
    h, inter, v, e = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["embedding_size"]
    hd = h // cfg["num_attention_heads"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (v, h), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,), "norm"),
                (p + "self_attn.q_proj.weight", (nh * hd, h), "qk"),
                (p + "self_attn.k_proj.weight", (nkv * hd, h), "qk"),
                (p + "self_attn.v_proj.weight", (nkv * hd, h), "vo"),
                (p + "self_attn.o_proj.weight", (h, nh * hd), "vo"),
                (p + "post_attention_layernorm.weight", (h,), "norm"),
                (p + "mlp.gate_proj.weight", (inter, h), "mlp"),
                (p + "mlp.up_proj.weight", (inter, h), "mlp"),
                (p + "mlp.down_proj.weight", (h, inter), "mlp")]
    out += [("model.norm.weight", (h,), "norm"),
            ("lm_head.weight", (v, h), "lm_head"),
            ("model.projector.0.weight", (h, e), "proj0_w"),
            ("model.projector.0.bias", (h,), "proj0_b"),
            ("model.projector.2.weight", (h, h), "proj2_w"),
            ("model.projector.2.bias", (h,), "proj2_b"),
            ("model.encoder.encoder.embeddings.word_embeddings.weight", (16, e), "dummy"),
            ("model.encoder.encoder.embeddings.LayerNorm.weight", (e,), "dummy")]
    return out


def write_pe_rank(root):
    d = os.path.join(root, "pe-rank-tiny")
    os.makedirs(d, exist_ok=True)
    tj = pe_rank_tokenizer_json()
    base = len(tj["model"]["vocab"])
    cfg = dict(PE_RANK["config"], vocab_size=base + 2)
    assert cfg["embedding_size"] != cfg["hidden_size"]
    specs = pe_rank_tensor_specs(cfg)
    rng = np.random.default_rng(PE_RANK["seed"])
    std = PE_RANK["std"]
    values = {}
    for n, s, k in specs:
        x = np.float32(std[k]) * rng.standard_normal(s, dtype=np.float32)
        values[n] = (x + np.float32(1.0)) if k == "norm" else x
    for stale in [f for f in os.listdir(d) if f.endswith(".safetensors") or f.endswith(".index.json")]:
        os.remove(os.path.join(d, stale))
    # Shard 1: embeddings + layer 0; shard 2: the rest (layer 1, norm, lm_head, projector, encoder).
    groups = [[], []]
    for n, s, _ in specs:
        first = n == "model.embed_tokens.weight" or n.startswith("model.layers.0.")
        groups[0 if first else 1].append((n, s, "BF16"))
    weight_map, total = {}, 0
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        total += write_safetensors(os.path.join(d, fname), g, lambda n, s: iter([values[n]]))
        weight_map.update({n: fname for n, _, _ in g})
    write_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json(os.path.join(d, "config.json"), cfg)
    write_json(os.path.join(d, "tokenizer.json"), tj)
    tcfg, smap = pe_rank_tokenizer_files(base)
    write_json(os.path.join(d, "tokenizer_config.json"), tcfg)
    write_json(os.path.join(d, "special_tokens_map.json"), smap)
    return d


# JinaBERT (jina-embeddings-v2-base-en's architecture): tensor names as in that checkpoint, which
# candle-transformers' jina_bert.rs and text-embeddings-inference's jina.rs load unprefixed.
JINA_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
JINA_EXTRA_WORDS = """
caffeine blocks adenosine receptors brain delays feeling sleep cafe serves espresso late night
passage passages embeddings embedding compress document documents vector fast rerank reranking
reranker rerankers listwise candidates once output permutation quality improves avoided pm
capital france paris token tokens special query search text original relevance order ranking
""".split()
JINA_SUFFIXES = ["s", "es", "ed", "ing", "ly", "er", "ers", "tion", "al", "ness"]

JINA = dict(
    seed=1301,
    std={"embed": 1.0, "type": 0.1, "qk": 0.3, "linear": 0.2, "bias": 0.1, "ln_w": 0.1, "ln_b": 0.1},
    config={
        "_name_or_path": "jinaai/jina-bert-implementation",
        "architectures": ["JinaBertForMaskedLM"],
        "attention_probs_dropout_prob": 0.0,
        "attn_implementation": "torch",
        "auto_map": {
            "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
            "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
            "AutoModelForMaskedLM": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForMaskedLM",
            "AutoModelForSequenceClassification":
                "jinaai/jina-bert-implementation--modeling_bert.JinaBertForSequenceClassification",
        },
        "classifier_dropout": None,
        "emb_pooler": "mean",
        "feed_forward_type": "geglu",
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_max_length": 512,
        "model_type": "bert",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "position_embedding_type": "alibi",
        "torch_dtype": "float32",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": None,  # filled in from the tokenizer
    },
)


def jina_vocab():
    """[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, ASCII punctuation, digits, a-z, ##digits, ##a-z,
    whole words (lowercase), then ##suffixes: every lowercase ASCII word tokenizes without [UNK]."""
    punct = [chr(c) for c in range(33, 127) if not chr(c).isalnum()]
    chars = [chr(c) for c in range(ord("0"), ord("9") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    toks = _dedup(JINA_SPECIALS + punct + chars + ["##" + c for c in chars]
                  + [w.lower() for w in WORDS + JINA_EXTRA_WORDS if w.isalpha()]
                  + ["##" + s for s in JINA_SUFFIXES])
    return toks


def jina_tokenizer_json():
    toks = jina_vocab()
    ids = {t: i for i, t in enumerate(toks)}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": ids[t], "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for t in JINA_SPECIALS],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1),
                     special("[SEP]", 1)],
            "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids},
    }


def jina_tensor_specs(cfg):
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    out = [("embeddings.word_embeddings.weight", (v, h), "embed"),
           ("embeddings.token_type_embeddings.weight", (cfg["type_vocab_size"], h), "type"),
           ("embeddings.LayerNorm.weight", (h,), "ln_w"),
           ("embeddings.LayerNorm.bias", (h,), "ln_b")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            out += [(p + f"attention.self.{m}.weight", (h, h), "qk" if m != "value" else "linear"),
                    (p + f"attention.self.{m}.bias", (h,), "bias")]
        out += [(p + "attention.output.dense.weight", (h, h), "linear"),
                (p + "attention.output.dense.bias", (h,), "bias"),
                (p + "attention.output.LayerNorm.weight", (h,), "ln_w"),
                (p + "attention.output.LayerNorm.bias", (h,), "ln_b"),
                # rows 0..I-1: the GELU-activated half; rows I..2I-1: the linear half
                (p + "mlp.gated_layers.weight", (2 * inter, h), "linear"),
                (p + "mlp.wo.weight", (h, inter), "linear"),
                (p + "mlp.wo.bias", (h,), "bias"),
                (p + "mlp.layernorm.weight", (h,), "ln_w"),
                (p + "mlp.layernorm.bias", (h,), "ln_b")]
    # BertModel's pooler (unused by mean pooling; a loader ignores it)
    out += [("pooler.dense.weight", (h, h), "linear"), ("pooler.dense.bias", (h,), "bias")]
    return out


def write_jina_bert(root):
    d = os.path.join(root, "jina-bert-tiny")
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    tj = jina_tokenizer_json()
    cfg = dict(JINA["config"], vocab_size=len(tj["model"]["vocab"]))
    specs = jina_tensor_specs(cfg)
    rng = np.random.default_rng(JINA["seed"])
    std = JINA["std"]
    values = {}
    for n, s, k in specs:
        x = np.float32(std[k]) * rng.standard_normal(s, dtype=np.float32)
        values[n] = (x + np.float32(1.0)) if k == "ln_w" else x
    write_safetensors(os.path.join(d, "model.safetensors"), [(n, s, "F32") for n, s, _ in specs],
                      lambda n, s: iter([values[n]]))
    write_json(os.path.join(d, "config.json"), cfg)
    write_json(os.path.join(d, "tokenizer.json"), tj)
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                "cls_token": "[CLS]", "mask_token": "[MASK]"}
    write_json(os.path.join(d, "tokenizer_config.json"), dict(
        specials, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True,
        do_basic_tokenize=True, never_split=None, model_max_length=512,
        clean_up_tokenization_spaces=True, tokenizer_class="BertTokenizer"))
    write_json(os.path.join(d, "special_tokens_map.json"), specials)
    write_json(os.path.join(d, "1_Pooling", "config.json"), {
        "word_embedding_dimension": cfg["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    write_json(os.path.join(d, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ])
    write_json(os.path.join(d, "sentence_bert_config.json"),
               {"max_seq_length": 512, "do_lower_case": False})
    return d


# --------------------------------------------------------------------------------------------
# PE-Rank at a real decoder shape (speed benchmarks only: `make bench-rerank`; random weights).
# The LLM is Qwen2.5-0.5B's shape (REAL["qwen2.5-0.5b"]: the cheapest real shape, about 2 GiB
# once loaded in f32) as model_type "embed_qwen2", with PE-Rank's extra config keys and the
# mlp2x_gelu projector for 768-dimensional passage embeddings (jina-embeddings-v2-base-en's).
# The prompt is PE-Rank's own: the Mistral-7B-Instruct-v0.2 chat template.
#
# Tokenizer: write_real's WordLevel vocabulary (most real words are <unk>: only the token COUNT
# matters for speed) with <PLACEHOLDER> and <RANK> added after it, and a pre-tokenizer meant to
# give about the token counts of Mistral's 32k sentencepiece vocabulary on English text: digits
# one by one, letters in pieces of at most 6, each punctuation character alone, each newline a
# token, spaces dropped ("[INST]" -> "[", "INST", "]" as the legacy tokenizer gives "▁[", "INST",
# "]"). The 100-word CISI abstracts of `make bench-rerank` come to 1.52 tokens a word, about what
# a 32k sentencepiece vocabulary gives on scientific English (an estimate: no Mistral tokenizer
# is reachable offline); one token a word would make text mode look cheaper than it is.

REAL_PE_RANK = {
    "pe-rank-qwen2.5-0.5b": dict(
        seed=2101, base="qwen2.5-0.5b",
        extra={
            "architectures": ["EmbedQwen2ForRankLM"],
            "model_type": "embed_qwen2",
            "encoder_name": "jinaai/jina-embeddings-v2-base-en",
            "encoder_pooling": "mean",
            "use_proj": True,
            "projector_type": "mlp2x_gelu",
            "embedding_size": 768,
            "tokenizer_padding_side": "left",
            "tokenizer_model_max_length": 4096,
            "tune_mlp_adapter": False,
            "freeze_backbone": False,
        }),
}

REAL_PE_RANK_PRETOKENIZER = r"\n|\d|[^\W\d_]{1,6}|[^\w\s]"


def real_pe_rank_tokenizer_json(vocab_size):
    """write_real's tokenizer for vocab_size - 2 ids, <PLACEHOLDER> and <RANK> the last two ids."""
    tj = tokenizer_json(vocab_size - 2, False)
    base = len(tj["model"]["vocab"])
    assert base == vocab_size - 2
    for i, content in ((base, PE_PLACEHOLDER_TOKEN), (base + 1, PE_RANK_TOKEN)):
        tj["added_tokens"].append({"id": i, "content": content, "single_word": False, "lstrip": False,
                                   "rstrip": False, "normalized": False, "special": True})
    # Whitespace's own rule (Split, Removed, inverted: the matches are the pieces) on this pattern.
    tj["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": REAL_PE_RANK_PRETOKENIZER},
                           "behavior": "Removed", "invert": True}
    return tj, base


def write_real_pe_rank(root, key, layers=None):
    spec = REAL_PE_RANK[key]
    llm = dict(REAL[spec["base"]]["config"])
    if layers is not None:
        llm["num_hidden_layers"] = layers
    cfg = dict(llm, **spec["extra"])
    h, e = cfg["hidden_size"], cfg["embedding_size"]
    d = os.path.join(root, "real-" + key)
    os.makedirs(d, exist_ok=True)
    specs = tensor_specs(llm, "BF16") + [
        ("model.projector.0.weight", (h, e), "linear", "BF16"),
        ("model.projector.0.bias", (h,), "bias", "BF16"),
        ("model.projector.2.weight", (h, h), "linear", "BF16"),
        ("model.projector.2.bias", (h,), "bias", "BF16")]
    produce = chunked_weights(spec["seed"], specs)
    total = write_safetensors(os.path.join(d, "model.safetensors"),
                              [(n, s, dt) for n, s, _, dt in specs], produce)
    write_json(os.path.join(d, "config.json"), cfg)
    tj, base = real_pe_rank_tokenizer_json(cfg["vocab_size"])
    write_json(os.path.join(d, "tokenizer.json"), tj, indent=None)

    specials = dict(enumerate(SPECIALS))
    specials.update({base: PE_PLACEHOLDER_TOKEN, base + 1: PE_RANK_TOKEN})
    tcfg = dict(TOKENIZER_CONFIG, model_max_length=cfg["tokenizer_model_max_length"],
                chat_template=MISTRAL_V02_CHAT_TEMPLATE,
                added_tokens_decoder={str(i): added_token_config(t) for i, t in specials.items()})
    write_json(os.path.join(d, "tokenizer_config.json"), tcfg)
    print(f"{d}: {total / 2**30:.2f} GiB of bf16 weights, {cfg['num_hidden_layers']} layers, "
          f"projector {e} -> {h}, {PE_PLACEHOLDER_TOKEN} = {base}")
    return d


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--real", action="append", choices=sorted(REAL) + sorted(REAL_PE_RANK),
                    help="write a real-size random model instead of the tiny ones (repeatable)")
    ap.add_argument("--real-layers", type=int, default=None,
                    help="override num_hidden_layers for --real (quick smoke tests)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    _selftest_bf16()

    regimes = llama3_regimes(TINY["tiny-llama"]["config"])
    assert {"kept", "smoothed", "scaled"} <= set(regimes), regimes

    if args.real:
        for key in args.real:
            if key in REAL_PE_RANK:
                write_real_pe_rank(args.out, key, args.real_layers)
            else:
                write_real(args.out, key, args.real_layers)
        return
    for name, spec in TINY.items():
        print(write_model(args.out, name, spec))
    print(write_lora(args.out))
    print(write_pe_rank(args.out))
    print(write_jina_bert(args.out))
    print(f"tiny-llama rope frequency regimes: {regimes}")


if __name__ == "__main__":
    sys.exit(main())
