#!/usr/bin/env bash
# A throwaway PostgreSQL cluster (15; LR_PG_BIN for another) owned by the postgres user, on its own port and socket
# directory, for the demo and the end-to-end tests. Usage: cluster.sh start|stop|psql [args]
#   LR_PGPORT (default 28815)  LR_CLUSTER_DIR (default /tmp/lightretriever-cluster-$LR_PGPORT)
#   LR_PRELOAD=1 (default) adds lightretriever to shared_preload_libraries (encoder workers);
#   LR_PRELOAD=0 starts a server without them. LR_PRELOAD_FIRST=citus loads that library first
#   (Citus must come first in shared_preload_libraries; scripts/citus_cluster.sh).
set -euo pipefail
BIN=${LR_PG_BIN:-/usr/lib/postgresql/15/bin}  # another major: scripts/test_pg_major.sh
PORT=${LR_PGPORT:-28815}
DIR=${LR_CLUSTER_DIR:-/tmp/lightretriever-cluster-$PORT}
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres -- "$@"; fi; }

case "${1:-}" in
  start)
    if [ -f "$DIR/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true; fi
    rm -rf "$DIR"; mkdir -p "$DIR/sock"; chown -R postgres: "$DIR" 2>/dev/null || sudo chown -R postgres: "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync >/dev/null
    # The e2e suite leaves a dozen databases with active auto-encodings, each with its drain
    # worker: room for them beside the encoder, the launcher and parallel queries.
    libs=lightretriever; [ -n "${LR_PRELOAD_FIRST:-}" ] && libs="$LR_PRELOAD_FIRST,$libs"
    preload=""; [ "${LR_PRELOAD:-1}" = 1 ] && preload="-c shared_preload_libraries=$libs -c max_worker_processes=40 -c lightretriever.max_drain_workers=24"
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
      -o "-p $PORT -k $DIR/sock -c listen_addresses='' -c fsync=off $preload" start >/dev/null
    echo "cluster up: host=$DIR/sock port=$PORT (log $DIR/server.log)";;
  stop)
    [ -f "$DIR/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" stop -m fast >/dev/null || true
    rm -rf "$DIR";;
  psql)
    shift; exec psql -X -h "$DIR/sock" -p "$PORT" -U postgres "$@";;
  *) echo "usage: $0 start|stop|psql" >&2; exit 2;;
esac
