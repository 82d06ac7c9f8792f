#!/usr/bin/env bash
# What `make test-pg17` / `make test-pg18` need (root; idempotent, a no-op once done). Usage:
#   setup_pg_major.sh MAJOR
# A PostgreSQL MAJOR server built from Debian's source package (bookworm carries only 15: 17 comes
# from trixie, 18 from sid), pgvector built for it from trixie's source package (as for 15), and
# pgrx told where its pg_config is. The server goes to its own prefix, beside the system's
# PostgreSQL 15, and serves only the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR=${1:?usage: setup_pg_major.sh MAJOR}
case "$MAJOR" in 17) SUITE=trixie;; 18) SUITE=sid;; *) echo "PostgreSQL $MAJOR: not supported here (17, 18)" >&2; exit 2;; esac
PREFIX=/opt/lightretriever/postgresql-$MAJOR
PG_CONFIG=$PREFIX/bin/pg_config
log() { printf '[setup-pg%s] %s\n' "$MAJOR" "$*"; }
# shellcheck source=scripts/debs.sh
source scripts/debs.sh

bash scripts/setup.sh >/dev/null  # the deb-src entry, cargo-pgrx, pg15 (the default build)
install_missing_debs "setup-pg$MAJOR" bison flex libicu-dev libreadline-dev zlib1g-dev dpkg-dev build-essential pkg-config

# deb-src entries for trixie (setup.sh's, for pgvector) and sid.
src=/etc/apt/sources.list.d/lightretriever-sid-src.sources
if [ "$SUITE" = sid ] && [ ! -f "$src" ]; then
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: sid\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$src"
fi

fetch_source() { # package/suite → prints the unpacked directory
  local work; work=$(mktemp -d)
  if ! (cd "$work" && apt-get source -qq "$1" >/dev/null 2>&1); then
    (cd "$work" && apt-get source "$1" >&2) || { echo "apt-get source $1 failed (above)" >&2; exit 1; }
  fi
  find "$work" -maxdepth 1 -mindepth 1 -type d | head -1
}

if [ ! -x "$PG_CONFIG" ]; then
  log "building PostgreSQL $MAJOR from Debian $SUITE's source package into $PREFIX (about 6 minutes on 2 cores)"
  apt-get update -qq
  dir=$(fetch_source "postgresql-$MAJOR/$SUITE")
  # Upstream's configure on Debian's patched tree (18's tarball needs bison and flex).
  (cd "$dir" && ./configure -q --prefix="$PREFIX" --with-icu >/dev/null \
     && make -s -j"$(nproc)" >/dev/null && make -s install >/dev/null)
  rm -rf "$(dirname "$dir")"
fi
log "$("$PG_CONFIG" --version) at $PREFIX"

if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
  log "building pgvector for PostgreSQL $MAJOR from Debian trixie's source package"
  dir=$(fetch_source pgvector/trixie)
  if [ "$MAJOR" -ge 18 ]; then
    # The archive serves trixie's 0.8.0 only (sid's newer source is not fetchable here); 0.8.0
    # predates PostgreSQL 18, whose API changed in two places pgvector touches. These are the
    # changes upstream's 0.8.1 made: vacuum_delay_point takes is_analyze, TupleDesc lost `attrs`.
    grep -rl 'vacuum_delay_point()' "$dir/src" | xargs sed -i 's/vacuum_delay_point()/vacuum_delay_point(false)/'
    sed -i 's/buildstate->tupdesc->attrs\[0\]\.atttypid/TupleDescAttr(buildstate->tupdesc, 0)->atttypid/' "$dir/src/ivfbuild.c"
  fi
  make -s -C "$dir" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
  make -s -C "$dir" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" install >/dev/null
  rm -rf "$(dirname "$dir")"
fi

# pgrx reads ~/.pgrx/config.toml for each pgNN feature; `cargo pgrx init --pgNN` alone would drop
# the pg15 entry that setup.sh recorded, so add the line beside it.
config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
if ! grep -qs "^pg$MAJOR = \"$PG_CONFIG\"" "$config"; then
  sed -i "/^pg$MAJOR = /d" "$config"
  echo "pg$MAJOR = \"$PG_CONFIG\"" >> "$config"
  log "pgrx: pg$MAJOR = $PG_CONFIG"
fi
