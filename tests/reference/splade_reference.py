#!/usr/bin/env python3
"""Independent SPLADE reference for the sparse encoder (lr-model's SparseEncoder).

Written from the BERT paper (Devlin et al. 2019), the model's config.json and the SPLADE
definition (Formal et al. 2021: w_j = max_i log(1 + relu(logit_ij))), in float64 numpy, one text
at a time (no padding). It shares no code with the Rust encoder; only the tokenizer library is
common (Hugging Face `tokenizers`, whose output is recorded so that the test checks it too).

    python3 -m venv /tmp/lrvenv && /tmp/lrvenv/bin/pip install numpy safetensors tokenizers
    /tmp/lrvenv/bin/python tests/reference/splade_reference.py [MODEL_DIR]

writes tests/reference/splade_tiny.json next to this script.
"""

import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MODEL_DIR = sys.argv[1] if len(sys.argv) > 1 else "/opt/lightretriever/models/splade-tiny"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splade_tiny.json")

LONG_TEXT = " ".join(
    f"Paragraph {i} discusses how libraries index, classify and retrieve scientific documents."
    for i in range(60)
)
TEXTS = [
    "",
    "The present study is a history of the DEWEY Decimal Classification.",
    "Café naïve façade — 東京 and Zürich 🚀🔥 emoji-laden text ✓",
    "library library library library library science",
    LONG_TEXT,
    "a query with literal [SEP] and [CLS] markers inside",
    "retrieval",
]

ERF = np.vectorize(math.erf)


def gelu(x, kind):
    if kind == "gelu":  # exact GELU, as in the original BERT code
        return 0.5 * x * (1.0 + ERF(x / math.sqrt(2.0)))
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(f"unsupported hidden_act {kind}")


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class Weights:
    """Tensors by name, float64; LayerNorm accepts both `gamma/beta` and `weight/bias`."""

    def __init__(self, path):
        self.t = {k: v.astype(np.float64) for k, v in load_file(path).items()}

    def __getitem__(self, name):
        return self.t[name]

    def norm(self, prefix):
        if prefix + ".gamma" in self.t:
            return self.t[prefix + ".gamma"], self.t[prefix + ".beta"]
        return self.t[prefix + ".weight"], self.t[prefix + ".bias"]

    def dense(self, prefix, x):
        # PyTorch Linear stores weight as [out, in].
        return x @ self.t[prefix + ".weight"].T + self.t[prefix + ".bias"]


def mlm_logits(ids, w, cfg):
    """Logits [len, vocab] of BertForMaskedLM for one unpadded sequence."""
    eps = cfg["layer_norm_eps"]
    act = cfg["hidden_act"]
    n = len(ids)
    x = (
        w["bert.embeddings.word_embeddings.weight"][ids]
        + w["bert.embeddings.position_embeddings.weight"][np.arange(n)]
        + w["bert.embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, *w.norm("bert.embeddings.LayerNorm"), eps)
    heads = cfg["num_attention_heads"]
    dh = cfg["hidden_size"] // heads
    for layer in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{layer}"
        q = w.dense(p + ".attention.self.query", x).reshape(n, heads, dh).transpose(1, 0, 2)
        k = w.dense(p + ".attention.self.key", x).reshape(n, heads, dh).transpose(1, 0, 2)
        v = w.dense(p + ".attention.self.value", x).reshape(n, heads, dh).transpose(1, 0, 2)
        attn = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(dh))
        ctx = (attn @ v).transpose(1, 0, 2).reshape(n, heads * dh)
        x = layer_norm(x + w.dense(p + ".attention.output.dense", ctx), *w.norm(p + ".attention.output.LayerNorm"), eps)
        inter = gelu(w.dense(p + ".intermediate.dense", x), act)
        x = layer_norm(x + w.dense(p + ".output.dense", inter), *w.norm(p + ".output.LayerNorm"), eps)
    # Masked-LM head; the decoder is tied to the word embeddings unless the file has its own.
    h = gelu(w.dense("cls.predictions.transform.dense", x), act)
    h = layer_norm(h, *w.norm("cls.predictions.transform.LayerNorm"), eps)
    decoder = w.t.get("cls.predictions.decoder.weight", w["bert.embeddings.word_embeddings.weight"])
    bias = w.t.get("cls.predictions.bias", w.t.get("cls.predictions.decoder.bias"))
    return h @ decoder.T + bias


def main():
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        cfg = json.load(f)
    w = Weights(os.path.join(MODEL_DIR, "model.safetensors"))
    max_len = cfg["max_position_embeddings"]
    tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)
    # Template positions: exactly one [CLS] first and one [SEP] last for a single sequence.
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")

    out = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        assert ids[0] == cls_id and ids[-1] == sep_id and len(ids) <= max_len
        logits = mlm_logits(np.array(ids), w, cfg)[1:-1]  # drop [CLS] and [SEP] positions
        if len(logits) == 0:
            weights = []
        else:
            doc = np.log1p(np.maximum(logits, 0.0)).max(axis=0)
            weights = [[int(i), float(doc[i])] for i in np.nonzero(doc > 0)[0]]
        out.append({"text": text, "token_ids": ids, "weights": weights})
        print(f"{len(ids):4d} tokens, {len(weights):5d} non-zeros: {text[:50]!r}")

    with open(OUT, "w") as f:
        json.dump(
            {
                "model": os.path.basename(os.path.normpath(MODEL_DIR)),
                "max_length": max_len,
                "how": "float64 numpy BERT forward per text; weight = max over non-[CLS]/[SEP] "
                "positions of log1p(relu(MLM logit)); weights > 0 listed as [id, weight]",
                "texts": out,
            },
            f,
            ensure_ascii=False,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
