#!/usr/bin/env bash
# `make test-pg17` / `make test-pg18`: the #[pg_test]s and the end-to-end foundation, pipeline
# and every-database tests on another PostgreSQL major (root). Usage: test_pg_major.sh MAJOR
# The server is built from Debian's source package (scripts/setup_pg_major.sh, once, ~6 min);
# the extension for it goes to its own target directory (target/pgMAJOR) so that the PostgreSQL
# 15 build of `make test` is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR=${1:?usage: test_pg_major.sh MAJOR}
bash scripts/setup_pg_major.sh "$MAJOR"
PG_CONFIG=/opt/lightretriever/postgresql-$MAJOR/bin/pg_config
PGDATA_TEST=/tmp/lightretriever-pgrx-test-$MAJOR
PORT=$((28830 + MAJOR))
log() { printf '[test-pg%s] %s\n' "$MAJOR" "$*"; }

log "#[pg_test]s"
mkdir -p "$PGDATA_TEST" && chown postgres: "$PGDATA_TEST"
CARGO_TARGET_DIR=target/pg$MAJOR cargo pgrx test -p lightretriever --runas postgres --pgdata "$PGDATA_TEST" "pg$MAJOR"

log "end to end (foundation, pipeline, databases, replica) on a PostgreSQL $MAJOR cluster"
CARGO_TARGET_DIR=target/pg$MAJOR cargo pgrx install -p lightretriever --pg-config "$PG_CONFIG" \
  --no-default-features --features "pg$MAJOR"
export LR_PG_BIN LR_PGPORT=$PORT LR_CLUSTER_DIR=/tmp/lightretriever-e2e-pg$MAJOR
LR_PG_BIN=$("$PG_CONFIG" --bindir)
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
LR_TEST_PGHOST=$LR_CLUSTER_DIR/sock LR_TEST_PGPORT=$PORT \
  cargo test --locked -p lr-e2e --test foundation --test pipeline --test databases --test replica -- --test-threads=1
log "passed on $("$PG_CONFIG" --version)"
