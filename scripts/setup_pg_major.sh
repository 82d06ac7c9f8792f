#!/usr/bin/env bash
# What `make test-pg17` / `make test-pg18` need (root; idempotent, a no-op once done). Usage:
#   setup_pg_major.sh MAJOR
# Bookworm carries only PostgreSQL 15. For another major:
# - 18: the server built from Debian sid's source package into its own prefix beside the system's
#   15, pgvector built for it by docker/build-pgvector.sh (as for 15), and pgrx told where its
#   pg_config is.
# - 17: this machine's Debian mirror serves trixie's postgresql-17 binary packages but not their
#   source (404). Trixie's binaries need trixie's glibc, so they get a root file system of their
#   own: Debian trixie by mmdebstrap with postgresql-17, postgresql-server-dev-17,
#   postgresql-17-pgvector and a C toolchain, all Debian's packages; scripts/rootfs_run.sh runs the
#   tests in it. PostgreSQL 17 there is exactly what a trixie user installs.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR=${1:?usage: setup_pg_major.sh MAJOR}
case "$MAJOR" in 17) SUITE=trixie;; 18) SUITE=sid;; *) echo "PostgreSQL $MAJOR: not supported here (17, 18)" >&2; exit 2;; esac
PREFIX=/opt/lightretriever/postgresql-$MAJOR
PG_CONFIG=$PREFIX/bin/pg_config
log() { printf '[setup-pg%s] %s\n' "$MAJOR" "$*"; }
# shellcheck source=scripts/debs.sh
source scripts/debs.sh

bash scripts/setup.sh >/dev/null  # cargo-pgrx, pg15 (the default build)

if [ "$MAJOR" = 17 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup_pg_major.sh 17: run as root (mmdebstrap's root mode)" >&2; exit 2; }
  ROOT=/opt/lightretriever/postgresql-17-trixie
  packages=postgresql-17,postgresql-server-dev-17,postgresql-17-pgvector,build-essential,clang,libclang-dev,pkg-config,sudo,ca-certificates,procps
  # No cluster of the package's own: the tests make theirs.
  hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.conf"'
  stamp="$SUITE $packages $hook"
  if [ "$(cat "$ROOT/.lightretriever-stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$ROOT/usr/lib/postgresql/17/bin/pg_config" ]; then
    install_missing_debs "setup-pg$MAJOR" mmdebstrap debian-archive-keyring
    log "Debian $SUITE root file system with PostgreSQL 17 at $ROOT (about a minute)"
    # --one-file-system: a mount left in an old tree (a killed run) stops the removal instead of
    # being followed. mmdebstrap's own mounts stay in a private mount namespace.
    rm -rf --one-file-system "$ROOT" "$ROOT.new"
    unshare --mount --propagation private -- mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
      --aptopt='APT::Install-Recommends "false"' --essential-hook="$hook" \
      "$SUITE" "$ROOT.new" "${LR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    echo "$stamp" > "$ROOT.new/.lightretriever-stamp"
    mv "$ROOT.new" "$ROOT"
  fi
  # pgrx's configuration for builds inside it, kept in it (the pg15 and pg18 entries here name
  # paths that do not exist there).
  mkdir -p "$ROOT/var/lib/pgrx"
  printf '[configs]\npg17 = "/usr/lib/postgresql/17/bin/pg_config"\n' > "$ROOT/var/lib/pgrx/config.toml"
  version=$(scripts/rootfs_run.sh "$ROOT" /usr/lib/postgresql/17/bin/pg_config --version)
  log "$version in $ROOT"
  exit 0
fi
install_missing_debs "setup-pg$MAJOR" bison flex libicu-dev libreadline-dev zlib1g-dev dpkg-dev build-essential pkg-config

# A deb-src entry for the server's suite (the same file docker/build-pgvector.sh writes for trixie).
src=/etc/apt/sources.list.d/lightretriever-$SUITE-src.sources
if [ ! -f "$src" ]; then
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$SUITE" > "$src"
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
  # Upstream's configure on Debian's patched tree (18's tarball needs bison and flex). Run from
  # `make test-pg18`, the outer make's MAKELEVEL would tell PostgreSQL's makefiles that they are
  # not the top level, and they would skip the generated headers (utils/errcodes.h missing).
  (cd "$dir" && ./configure -q --prefix="$PREFIX" --with-icu >/dev/null \
     && env -u MAKELEVEL -u MAKEFLAGS -u MFLAGS make -s -j"$(nproc)" >/dev/null \
     && env -u MAKELEVEL -u MAKEFLAGS -u MFLAGS make -s install >/dev/null)
  rm -rf "$(dirname "$dir")"
fi
log "$("$PG_CONFIG" --version) at $PREFIX"

if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
  log "building pgvector for PostgreSQL $MAJOR from Debian trixie's source package"
  stage=$(mktemp -d)
  PG_CONFIG="$PG_CONFIG" sh docker/build-pgvector.sh "$stage/root" >/dev/null
  cp -a "$stage/root/." /
  rm -rf "$stage"
fi

# pgrx reads ~/.pgrx/config.toml for each pgNN feature; `cargo pgrx init --pgNN` alone would drop
# the pg15 entry that setup.sh recorded, so add the line beside it.
config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
if ! grep -qs "^pg$MAJOR = \"$PG_CONFIG\"" "$config"; then
  sed -i "/^pg$MAJOR = /d" "$config"
  echo "pg$MAJOR = \"$PG_CONFIG\"" >> "$config"
  log "pgrx: pg$MAJOR = $PG_CONFIG"
fi
