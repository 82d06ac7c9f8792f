#!/usr/bin/env bash
# A throwaway Citus cluster on this machine: a coordinator on LR_PGPORT (default 29100) and two
# worker nodes on the next two ports, each its own PostgreSQL 15 cluster (scripts/cluster.sh)
# with `citus,lightretriever` preloaded, on Unix sockets only; nodes are registered by socket
# directory. Usage: citus_cluster.sh start|stop. Citus: scripts/setup_citus.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${LR_PGPORT:-29100}
unset LR_CLUSTER_DIR  # each node in its own default directory (scripts/cluster.sh)
nodes=("$PORT" "$((PORT + 1))" "$((PORT + 2))")
sock() { echo "/tmp/lightretriever-cluster-$1/sock"; }
psql_at() { local port=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h "$(sock "$port")" -p "$port" -U postgres "$@"; }

case "${1:-}" in
  start)
    for p in "${nodes[@]}"; do LR_PGPORT=$p LR_PRELOAD_FIRST=citus bash scripts/cluster.sh start >/dev/null; done
    for p in "${nodes[@]}"; do psql_at "$p" -d postgres -c "CREATE EXTENSION citus"; done
    psql_at "$PORT" -d postgres -c "SELECT citus_set_coordinator_host('$(sock "$PORT")', $PORT)" >/dev/null
    for p in "${nodes[@]:1}"; do psql_at "$PORT" -d postgres -c "SELECT citus_add_node('$(sock "$p")', $p)" >/dev/null; done
    echo "citus up: coordinator host=$(sock "$PORT") port=$PORT, workers on ports ${nodes[1]} ${nodes[2]}";;
  stop)
    for p in "${nodes[@]}"; do LR_PGPORT=$p bash scripts/cluster.sh stop; done;;
  *) echo "usage: $0 start|stop" >&2; exit 2;;
esac
