#!/usr/bin/env python3
"""Independent numpy reference for the decoder-LLM encoders (Llama / Mistral / Qwen2 / Qwen3 + LoRA).

    python3 scripts/make_test_models.py --out target/lr-test-models
    python3 tests/decoder_reference/reference.py target/lr-test-models

reads the checkpoints written by make_test_models.py (safetensors parsed by hand: F32, F16, BF16,
single file or sharded with model.safetensors.index.json; config.json) and writes
DIR/reference/{tiny-llama,tiny-mistral,tiny-qwen2,tiny-qwen3,tiny-llama+lora}.json.

The forward pass follows Hugging Face transformers' modeling_llama / modeling_mistral /
modeling_qwen2 / modeling_qwen3 and PEFT's LoRA layer, evaluated in float64 from the stored
(possibly bf16/f16-rounded) weights, one sequence at a time, no padding, positions 0..T-1:

  x = embed_tokens[ids]
  per layer:  h = RMSNorm(x) ; q,k,v = h W^T (+ b for qwen2)
              qwen3: q,k = RMSNorm_head_dim(q), RMSNorm_head_dim(k) per head, before RoPE
              RoPE rotate_half layout, inv_freq = theta^(-2i/head_dim) (llama3-scaled if configured)
              GQA: query head h attends with kv head h // (heads / kv_heads)
              softmax(q k^T / sqrt(head_dim) + causal mask) v ; x += o_proj(.)
              x += down(silu(gate(RMSNorm(x))) * up(RMSNorm(x)))
  hidden = RMSNorm_final(x) ; logits = hidden lm_head^T (lm_head = embed_tokens when tied)
  RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight
  LoRA (unmerged): y = x W^T + (alpha / r) * (x A^T) B^T on every target module
"""

import json
import math
import os
import struct
import sys
import zlib

import numpy as np

MODELS = ["tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-qwen3", "tiny-llama+lora"]
SEQ_LENGTHS = [2, 3, 7, 12, 40]  # including bos and eos
TABLE_PROMPT_IDS = [17, 42, 99]  # stand-in for an instruction prompt (all content ids)

# --------------------------------------------------------------------------------------------
# loading


def read_safetensors(path):
    """Returns {name: (np.float32 array, dtype string)}; checks the layout is contiguous."""
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + hlen].decode("utf-8"))
    header.pop("__metadata__", None)
    data = memoryview(buf)[8 + hlen:]
    out, spans = {}, []
    for name, info in header.items():
        s, e = info["data_offsets"]
        shape, dt = tuple(info["shape"]), info["dtype"]
        n = int(np.prod(shape, dtype=np.int64))
        raw = data[s:e]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
        else:
            raise ValueError(f"{path}: {name}: unsupported dtype {dt}")
        assert a.size == n, (name, a.size, shape)
        out[name] = (a.reshape(shape).astype(np.float32), dt)
        spans.append((s, e))
    spans.sort()
    pos = 0
    for s, e in spans:
        assert s == pos, f"{path}: gap/overlap at {s}"
        pos = e
    assert pos == len(data), f"{path}: trailing bytes"
    return out


def load_weights(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            index = json.load(f)
        tensors, total = {}, 0
        for fname in sorted(set(index["weight_map"].values())):
            part = read_safetensors(os.path.join(model_dir, fname))
            for name, (a, dt) in part.items():
                assert index["weight_map"].get(name) == fname, f"{name} not mapped to {fname}"
                assert name not in tensors, f"{name} in two shards"
                tensors[name] = (a, dt)
                total += a.size * {"F32": 4, "F16": 2, "BF16": 2}[dt]
        assert set(tensors) == set(index["weight_map"]), "index and shards disagree"
        assert total == index["metadata"]["total_size"], (total, index["metadata"]["total_size"])
    else:
        tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return tensors


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------
# model


def rope_inv_freq(cfg, head_dim):
    """As transformers' modeling_rope_utils: default and "llama3" rope types, computed in float32."""
    theta = np.float32(cfg.get("rope_theta", 10000.0))
    inv = (np.float32(1.0) / (theta ** (np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim))))
    inv = inv.astype(np.float32)
    rs = cfg.get("rope_scaling")
    rtype = (rs or {}).get("rope_type", (rs or {}).get("type", "default"))
    if rtype == "default":
        return inv.astype(np.float64), None
    assert rtype == "llama3", f"rope_type {rtype} not covered by this reference"
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    inv = inv.astype(np.float64)
    wavelen = 2 * math.pi / inv
    low_wl, high_wl = old / lo, old / hi
    out, regimes = np.empty_like(inv), []
    for i, (f, w) in enumerate(zip(inv, wavelen)):
        if w < high_wl:  # high frequency: unchanged
            out[i] = f
            regimes.append("kept")
        elif w > low_wl:  # low frequency: divided by factor
            out[i] = f / factor
            regimes.append("scaled")
        else:  # in between: interpolate
            smooth = (old / w - lo) / (hi - lo)
            out[i] = (1 - smooth) * f / factor + smooth * f
            regimes.append("smoothed")
    return out, regimes


class Model:
    def __init__(self, root, name):
        self.name = name
        base = name.split("+")[0]
        self.base_dir = base
        self.adapter_dir = base + "-lora" if name.endswith("+lora") else None
        d = os.path.join(root, base)
        cfg = self.cfg = load_json(os.path.join(d, "config.json"))
        raw = load_weights(d)
        self.dtypes = {dt for _, dt in raw.values()}
        self.w = {n: a.astype(np.float64) for n, (a, _) in raw.items()}
        self.mt = cfg["model_type"]
        self.H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.H // self.nh
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg["rms_norm_eps"]
        self.V = cfg["vocab_size"]
        assert self.nh % self.nkv == 0
        self.inv_freq, self.regimes = rope_inv_freq(cfg, self.hd)

        # --- checks on the checkpoint itself
        expect_dtype = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[cfg["torch_dtype"]]
        assert self.dtypes == {expect_dtype}, (self.dtypes, expect_dtype)
        if expect_dtype == "BF16":  # every value must be a bf16 (low 16 bits zero)
            for n, (a, _) in raw.items():
                assert not np.any(a.view(np.uint32) & np.uint32(0xFFFF)), n
        tied = cfg.get("tie_word_embeddings", False)
        assert ("lm_head.weight" in self.w) == (not tied), "tie_word_embeddings vs lm_head.weight"
        self.lm_head = self.w["model.embed_tokens.weight"] if tied else self.w["lm_head.weight"]
        assert self.lm_head.shape == (self.V, self.H)
        has_qkv_bias = any(n.endswith("q_proj.bias") for n in self.w)
        assert has_qkv_bias == (self.mt == "qwen2" or bool(cfg.get("attention_bias"))), "q/k/v bias"
        has_qk_norm = any(n.endswith("q_norm.weight") for n in self.w)
        assert has_qk_norm == (self.mt == "qwen3"), "q_norm/k_norm"
        assert self.w["model.layers.0.self_attn.q_proj.weight"].shape == (self.nh * self.hd, self.H)
        assert self.w["model.layers.0.self_attn.k_proj.weight"].shape == (self.nkv * self.hd, self.H)
        if self.regimes is not None:
            assert {"kept", "smoothed", "scaled"} <= set(self.regimes), self.regimes
        for key in ("sliding_window",):
            sw = cfg.get(key)
            use = cfg.get("use_sliding_window", self.mt == "mistral")
            assert not (use and sw is not None and sw < max(SEQ_LENGTHS)), "sliding window would bite"

        # --- LoRA (kept separate: applied unmerged)
        self.lora, self.lora_scale = {}, 0.0
        if self.adapter_dir:
            ad = os.path.join(root, self.adapter_dir)
            acfg = load_json(os.path.join(ad, "adapter_config.json"))
            assert acfg["peft_type"] == "LORA" and not acfg.get("use_rslora", False)
            assert not acfg.get("fan_in_fan_out", False) and acfg.get("bias", "none") == "none"
            r = acfg["r"]
            self.lora_scale = acfg["lora_alpha"] / r
            ten = read_safetensors(os.path.join(ad, "adapter_model.safetensors"))
            prefix = "base_model.model."
            for n, (a, _) in ten.items():
                assert n.startswith(prefix), n
                key = n[len(prefix):]
                if key.endswith(".lora_A.weight"):
                    mod, part = key[: -len(".lora_A.weight")], "A"
                elif key.endswith(".lora_B.weight"):
                    mod, part = key[: -len(".lora_B.weight")], "B"
                else:
                    raise AssertionError(f"unexpected adapter tensor {n}")
                assert mod.split(".")[-1] in acfg["target_modules"], mod
                assert mod + ".weight" in self.w, f"{mod} is not a base module"
                self.lora.setdefault(mod, {})[part] = a.astype(np.float64)
            for mod, ab in self.lora.items():
                W = self.w[mod + ".weight"]
                assert ab["A"].shape == (r, W.shape[1]) and ab["B"].shape == (W.shape[0], r), mod
                assert np.any(ab["B"] != 0), f"{mod}: lora_B is zero"
            assert len(self.lora) == self.L * len(acfg["target_modules"])
            btok = load_json(os.path.join(root, base, "tokenizer.json"))
            atok = load_json(os.path.join(ad, "tokenizer.json"))
            assert atok["model"] == btok["model"] and atok["normalizer"] == {"type": "Lowercase"}
        self.bos = cfg["bos_token_id"]
        self.eos = cfg["eos_token_id"]
        self.pad = cfg.get("pad_token_id")

    # -- building blocks

    def linear(self, x, mod, merged=False):
        W = self.w[mod + ".weight"]
        if merged and mod in self.lora:
            W = W + self.lora_scale * (self.lora[mod]["B"] @ self.lora[mod]["A"])
        y = x @ W.T
        b = self.w.get(mod + ".bias")
        if b is not None:
            y = y + b
        if not merged and mod in self.lora:
            y = y + self.lora_scale * ((x @ self.lora[mod]["A"].T) @ self.lora[mod]["B"].T)
        return y

    def rms_norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions):  # x [T, heads, hd]; rotate_half layout
        freqs = np.outer(positions.astype(np.float64), self.inv_freq)  # [T, hd/2]
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
        half = self.hd // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def attention(self, q, k, v):  # q [T, nh, hd], k/v [T, nkv, hd]
        T = q.shape[0]
        g = self.nh // self.nkv
        future = np.triu(np.ones((T, T), dtype=bool), k=1)
        out = np.empty((T, self.nh, self.hd))
        for h in range(self.nh):
            j = h // g  # repeat_kv: kv head j serves query heads j*g .. j*g+g-1
            s = (q[:, h, :] @ k[:, j, :].T) / math.sqrt(self.hd)
            s = np.where(future, -np.inf, s)
            s = s - s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            out[:, h, :] = p @ v[:, j, :]
        return out.reshape(T, self.nh * self.hd)

    def forward(self, ids, merged=False):
        """Final hidden states (after model.norm) [T, H] and logits [T, V] for one sequence."""
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        pos = np.arange(T)
        x = self.w["model.embed_tokens.weight"][ids]
        for i in range(self.L):
            p = f"model.layers.{i}."
            h = self.rms_norm(x, self.w[p + "input_layernorm.weight"])
            q = self.linear(h, p + "self_attn.q_proj", merged).reshape(T, self.nh, self.hd)
            k = self.linear(h, p + "self_attn.k_proj", merged).reshape(T, self.nkv, self.hd)
            v = self.linear(h, p + "self_attn.v_proj", merged).reshape(T, self.nkv, self.hd)
            if self.mt == "qwen3":
                q = self.rms_norm(q, self.w[p + "self_attn.q_norm.weight"])
                k = self.rms_norm(k, self.w[p + "self_attn.k_norm.weight"])
            q, k = self.rope(q, pos), self.rope(k, pos)
            x = x + self.linear(self.attention(q, k, v), p + "self_attn.o_proj", merged)
            h = self.rms_norm(x, self.w[p + "post_attention_layernorm.weight"])
            gate = self.linear(h, p + "mlp.gate_proj", merged)
            up = self.linear(h, p + "mlp.up_proj", merged)
            act = gate / (1.0 + np.exp(-gate))  # silu
            x = x + self.linear(act * up, p + "mlp.down_proj", merged)
        hidden = self.rms_norm(x, self.w["model.norm.weight"])
        assert np.all(np.isfinite(hidden))
        return hidden, hidden @ self.lm_head.T


# --------------------------------------------------------------------------------------------


def r7(a):
    return [float(f"{v:.7g}") for v in np.asarray(a, dtype=np.float64).ravel()]


def l2n(v):
    n = np.linalg.norm(v)
    assert n > 0
    return v / n


def sequences_for(model):
    # Seeded by the base model dir, so tiny-llama and tiny-llama+lora share inputs.
    rng = np.random.default_rng(zlib.crc32(model.base_dir.encode()))
    return [[model.bos] + rng.integers(4, model.V, size=n - 2).tolist() + [model.eos]
            for n in SEQ_LENGTHS]


def sparse_of(model, ids, logits):
    skip = {model.bos, model.eos} | ({model.pad} if model.pad is not None else set())
    keep = [t for t, i in enumerate(ids) if i not in skip]
    if not keep:
        return []
    w = np.log1p(np.maximum(logits[keep].max(axis=0), 0.0))
    return [[int(i), float(f"{w[i]:.7g}")] for i in np.nonzero(w > 0)[0]]


def build(root, name):
    m = Model(root, name)
    seqs = sequences_for(m)
    hidden, pooled, logits_last, sparse = [], [], [], []
    outs = []
    for ids in seqs:
        h, lg = m.forward(ids)
        outs.append((h, lg))
        hidden.append([r7(row) for row in h])
        pooled.append(r7(l2n(h[-1])))
        logits_last.append(r7(lg[-1]))
        sparse.append(sparse_of(m, ids, lg))
    assert sparse[0] == [] and all(sparse[1:])

    # self-checks: causality (a prefix computed alone gives the same states), and for LoRA
    # that the unmerged form equals the merged weights W + (alpha/r) B A.
    longest = seqs[-1]
    h_pre, _ = m.forward(longest[:12])
    assert np.allclose(h_pre, outs[-1][0][:12], atol=1e-10), "causal mask"
    if m.lora:
        h_merged, _ = m.forward(longest, merged=True)
        assert np.allclose(h_merged, outs[-1][0], atol=1e-9), "merged vs unmerged LoRA"
        base = Model(root, m.base_dir)
        h_base, _ = base.forward(longest)
        assert np.max(np.abs(h_base - outs[-1][0])) > 1e-2, "LoRA has no visible effect"

    table_ids = list(range(16)) + [m.V - 1]
    table_rows = []
    for t in table_ids:
        h, _ = m.forward([m.bos] + TABLE_PROMPT_IDS + [t] + [m.eos])
        table_rows.append(r7(l2n(h[-1])))

    return {
        "model": name,
        "base_dir": m.base_dir,
        "adapter_dir": m.adapter_dir,
        "vocab_size": m.V,
        "hidden_size": m.H,
        "bos_id": m.bos,
        "eos_id": m.eos,
        "pad_id": m.pad,
        "sequences": seqs,
        "hidden": hidden,
        "pooled": pooled,
        "logits_last": logits_last,
        "sparse": sparse,
        "table_prompt_ids": TABLE_PROMPT_IDS,
        "table_ids": table_ids,
        "table_rows": table_rows,
    }, m


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    root = sys.argv[1]
    out_dir = os.path.join(root, "reference")
    os.makedirs(out_dir, exist_ok=True)
    for name in MODELS:
        ref, m = build(root, name)
        path = os.path.join(out_dir, name + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(ref, f, separators=(",", ":"))
            f.write("\n")
        os.replace(path + ".tmp", path)
        extra = f" rope regimes {m.regimes}" if m.regimes else ""
        print(f"{path}: {m.mt} {sorted(m.dtypes)} H={m.H} heads={m.nh}/{m.nkv} head_dim={m.hd}"
              f"{' +LoRA' if m.lora else ''}{extra}")


if __name__ == "__main__":
    main()
