#!/usr/bin/env bash
# `make test-pg17` / `make test-pg18`: the #[pg_test]s and the end-to-end foundation, pipeline,
# every-database and replica tests (pg_dump included) on another PostgreSQL major (root).
# Usage: test_pg_major.sh MAJOR
# scripts/setup_pg_major.sh provides the server, once: 18 built from Debian sid's source package
# (~6 min), 17 as Debian trixie's own packages in a trixie root file system (~1 min), where this
# script then runs itself (scripts/rootfs_run.sh). The extension for it goes to its own target
# directory (target/pgMAJOR), so that the PostgreSQL 15 build of `make test` is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR=${1:?usage: test_pg_major.sh MAJOR}
log() { printf '[test-pg%s] %s\n' "$MAJOR" "$*"; }
if [ -z "${LR_IN_PG_ROOTFS:-}" ]; then
  bash scripts/setup_pg_major.sh "$MAJOR"
  if [ "$MAJOR" = 17 ]; then
    exec scripts/rootfs_run.sh /opt/lightretriever/postgresql-17-trixie \
      env LR_IN_PG_ROOTFS=1 PGRX_HOME=/var/lib/pgrx bash scripts/test_pg_major.sh 17
  fi
  PG_CONFIG=/opt/lightretriever/postgresql-$MAJOR/bin/pg_config
else
  PG_CONFIG=/usr/lib/postgresql/$MAJOR/bin/pg_config
fi
# Every build of this run, the e2e tests' too: binaries linked in the trixie root file system need
# its glibc and must not stand in for this machine's in target/debug.
export CARGO_TARGET_DIR=target/pg$MAJOR
PGDATA_TEST=/tmp/lightretriever-pgrx-test-$MAJOR
PORT=$((28830 + MAJOR))

log "#[pg_test]s"
mkdir -p "$PGDATA_TEST" && chown postgres: "$PGDATA_TEST"
cargo pgrx test -p lightretriever --runas postgres --pgdata "$PGDATA_TEST" "pg$MAJOR"

log "end to end (foundation, pipeline, databases, replica) on a PostgreSQL $MAJOR cluster"
cargo pgrx install -p lightretriever --pg-config "$PG_CONFIG" \
  --no-default-features --features "pg$MAJOR"
export LR_PG_BIN LR_PGPORT=$PORT LR_CLUSTER_DIR=/tmp/lightretriever-e2e-pg$MAJOR
LR_PG_BIN=$("$PG_CONFIG" --bindir)
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
LR_TEST_PGHOST=$LR_CLUSTER_DIR/sock LR_TEST_PGPORT=$PORT \
  cargo test --locked -p lr-e2e --test foundation --test pipeline --test databases --test replica -- --test-threads=1
log "passed on $("$PG_CONFIG" --version)"
