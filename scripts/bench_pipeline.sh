#!/usr/bin/env bash
# The auto-encoding pipeline bench against a throwaway cluster with the encoder worker
# (the extension must already be installed). Prints rows/s ratios and latencies.
set -euo pipefail
cd "$(dirname "$0")/.."
export LR_PGPORT=${LR_PGPORT:-28816}
export LR_CLUSTER_DIR=${LR_CLUSTER_DIR:-/tmp/lightretriever-bench-$LR_PGPORT}
export LR_TEST_PGHOST=$LR_CLUSTER_DIR/sock LR_TEST_PGPORT=$LR_PGPORT
cargo build --locked -p lr-e2e --example pipeline_bench
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
target/debug/examples/pipeline_bench
