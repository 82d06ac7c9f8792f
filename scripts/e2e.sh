#!/usr/bin/env bash
# Runs tests/e2e against a throwaway cluster (the extension must already be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
export LR_PGPORT=${LR_PGPORT:-28815}
export LR_CLUSTER_DIR=${LR_CLUSTER_DIR:-/tmp/lightretriever-e2e-$LR_PGPORT}
export LR_TEST_PGHOST=$LR_CLUSTER_DIR/sock LR_TEST_PGPORT=$LR_PGPORT
# The evaluation harness, run by the quality test to compare its numbers with SQL's.
cargo build --locked -p lr-eval
export LR_EVAL_BIN=$PWD/target/debug/lr-eval
# The previous release's install script, for the upgrade test (tests/e2e/tests/upgrade.rs):
# releases ship only the current script and the upgrade scripts.
install -m 0644 tests/upgrade/lightretriever--*.sql "$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --sharedir)/extension/"
# Citus for tests/e2e/tests/citus.rs: built once from ../shared/vendor (scripts/setup_citus.sh),
# a coordinator and two workers beside the e2e cluster (scripts/citus_cluster.sh).
bash scripts/setup_citus.sh
export LR_CITUS_PORT=${LR_CITUS_PORT:-29100}
export LR_CITUS_PGHOST=/tmp/lightretriever-cluster-$LR_CITUS_PORT/sock LR_CITUS_PGPORT=$LR_CITUS_PORT
trap 'scripts/cluster.sh stop; LR_PGPORT=$LR_CITUS_PORT bash scripts/citus_cluster.sh stop' EXIT
scripts/cluster.sh start
LR_PGPORT=$LR_CITUS_PORT bash scripts/citus_cluster.sh start
cargo test --locked -p lr-e2e -- --test-threads=1
bash scripts/examples.sh  # the example apps of examples/ (SQLAlchemy, Django, sqlx) on this cluster
# What users see, as golden files (pgvector's habit): tests/pg_regress/{sql,expected}.
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export LR_MODEL_ROOT=${LR_MODEL_ROOT:-/opt/lightretriever/models}
rm -rf target/pg_regress && mkdir -p target/pg_regress
if ! "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" --bindir="$("$PG_CONFIG" --bindir)" \
    --inputdir=tests/pg_regress --outputdir=target/pg_regress --host="$LR_TEST_PGHOST" --port="$LR_PGPORT" \
    --user=postgres --dbname=lr_regress functions errors search; then
  cat target/pg_regress/regression.diffs
  exit 1
fi
