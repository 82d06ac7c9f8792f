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
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
cargo test --locked -p lr-e2e -- --test-threads=1
