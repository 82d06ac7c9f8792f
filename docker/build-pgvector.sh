#!/bin/sh
# Build pgvector (0.8, Debian trixie's source package: bookworm has no binary package) against
# PostgreSQL 15 (or PG_CONFIG's) and install it under DESTDIR ($1), as a tree of /usr/... to copy
# onto the image. Used by the Dockerfile's pgvector stage and by scripts/build_image.sh (the
# daemonless build), so that both images carry the same pgvector, and by scripts/setup.sh and
# scripts/setup_pg_major.sh, which copy the tree in place. Needs: build-essential, dpkg-dev,
# postgresql-server-dev-15, a deb-src line for trixie (added here when missing).
# OPTFLAGS="": no -march=native, the library runs on any x86-64 CPU.
set -eu
DESTDIR=$(realpath -m "$1")
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
VERSION=${PGVECTOR_VERSION:-0.8.0-1}  # trixie's
src=/etc/apt/sources.list.d/lightretriever-trixie-src.sources
if ! apt-cache showsrc pgvector 2>/dev/null | grep -q "^Version: 0\.[89]"; then
  [ -f "$src" ] || printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$src"
  apt-get update -qq
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The pinned version, else (trixie moved on) the one trixie has now.
(cd "$work" && { apt-get source -qq "pgvector=$VERSION" >/dev/null 2>&1 || apt-get source -qq pgvector/trixie; })
dir=$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -1)
if [ "$("$PG_CONFIG" --version | sed 's/^[^0-9]*\([0-9]*\).*/\1/')" -ge 18 ]; then
  # 0.8.0 predates PostgreSQL 18 (scripts/test_pg_major.sh builds one), whose API changed in two
  # places pgvector touches; these are the changes upstream's 0.8.1 made: vacuum_delay_point
  # takes is_analyze, TupleDesc lost `attrs`.
  grep -rl 'vacuum_delay_point()' "$dir/src" | xargs sed -i 's/vacuum_delay_point()/vacuum_delay_point(false)/'
  sed -i 's/buildstate->tupdesc->attrs\[0\]\.atttypid/TupleDescAttr(buildstate->tupdesc, 0)->atttypid/' "$dir/src/ivfbuild.c"
fi
make -s -C "$dir" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
rm -rf "$DESTDIR"
make -s -C "$dir" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" DESTDIR="$DESTDIR" install >/dev/null
# Headers are for building other extensions against pgvector: not needed at run time.
rm -rf "$DESTDIR/usr/include"
echo "pgvector $VERSION installed under $DESTDIR"
