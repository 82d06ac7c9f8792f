#!/usr/bin/env bash
# What the ONNX Runtime side of `make bench-encode` needs (run as root; idempotent):
# Debian's CPU-only PyTorch 1.13 (apt) for the export, and a venv in target/bench-venv made by
# Debian's python3 with --system-site-packages (so that it sees that torch) holding, from PyPI:
#   transformers 4.49.0  the newest that runs on torch 1.13: 4.50/4.51 import the missing
#                        torch.distributed.tensor, and 4.52+ disable PyTorch < 2.1 outright
#   tokenizers 0.21.4    what transformers 4.49 accepts (< 0.22); the bench checks that its
#                        token counts equal ours
#   numpy 1.26.4         numpy 2 breaks torch 1.13, which was built against numpy 1.x; the PyPI
#                        wheel bundles OpenBLAS (Debian's numpy uses reference BLAS), the sgemm yardstick
#   onnx 1.23.2, onnxruntime 1.32.0, safetensors 0.8.0: current releases, work with numpy 1.26
#   sentence-transformers 2.7.0  the side an app would run instead; 3.x imports transformers'
#                        Trainer, which needs torch >= 2 (LRScheduler)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/bench-venv
PINS="numpy==1.26.4 transformers==4.49.0 tokenizers==0.21.4 onnx==1.23.2 onnxruntime==1.32.0 safetensors==0.8.0 sentence-transformers==2.7.0"

if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-torch python3-venv
fi
if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# The pins are installed once; a changed pin list reinstalls.
if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$PINS" ]; then
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q $PINS
    echo "$PINS" > "$VENV/.pins"
fi
"$VENV/bin/python" -c 'import torch, transformers, onnx, onnxruntime, tokenizers, numpy, safetensors, sentence_transformers
print("bench-venv: torch", torch.__version__, "transformers", transformers.__version__,
      "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)'
