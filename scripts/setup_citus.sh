#!/usr/bin/env bash
# Citus for the distributed tests (`make test-citus`): built from the source release in
# ../shared/vendor (no registry here carries Citus; users install it from Citus's own packages)
# into the system PostgreSQL 15. Root; idempotent, a no-op once the same version is installed.
# Facts behind each step: ../shared/notes/citus.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CITUS_VERSION=13.2.2
TARBALL=${LR_CITUS_TARBALL:-../shared/vendor/citus-$CITUS_VERSION.tar.gz}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
log() { printf '[setup-citus] %s\n' "$*"; }
# shellcheck source=scripts/debs.sh
source scripts/debs.sh

control="$($PG_CONFIG --sharedir)/extension/citus.control"
if [ -f "$control" ] && [ -f "$($PG_CONFIG --pkglibdir)/citus.so" ] \
   && grep -q "^default_version = '${CITUS_VERSION%.*}-" "$control"; then
  exit 0
fi
[ -f "$TARBALL" ] || { echo "setup_citus: $TARBALL is missing (Citus's source release, beside the project)" >&2; exit 1; }
# Build dependencies beyond the server headers (15's libpq-be.h includes gssapi/gssapi.h).
install_missing_debs setup-citus libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev build-essential
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$TARBALL" -C "$work"
src="$work/citus-$CITUS_VERSION"
# Debian's 15.x headers export have_createdb_privilege(), which Citus defines itself as a static
# inline for PostgreSQL < 16: "static declaration follows non-static declaration". Where the
# server declares it, Citus's copy goes (the server's is the same function).
if grep -q "have_createdb_privilege" "$($PG_CONFIG --includedir-server)/commands/dbcommands.h"; then
  python3 - "$src/src/include/pg_version_compat.h" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
patched, n = re.subn(r"\nstatic inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n", "\n", text, count=1, flags=re.S)
if n != 1:
    sys.exit("setup_citus: the have_createdb_privilege definition was not found")
open(path, "w").write(patched)
PY
fi
log "building Citus $CITUS_VERSION (about 2 minutes on 2 cores)"
(cd "$src" && ./configure -q PG_CONFIG="$PG_CONFIG" >/dev/null && make -s -j"$(nproc)" >/dev/null && make -s install >/dev/null)
log "installed Citus $CITUS_VERSION into $($PG_CONFIG --pkglibdir)"
