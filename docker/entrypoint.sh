#!/bin/bash
# The image's entrypoint (/usr/local/bin/lightretriever-entrypoint).
#
#   (no arguments) or `postgres [server options]` or `-c name=value ...`:
#       first start (no $PGDATA/PG_VERSION): initdb, write the server settings, start a private
#       server (Unix socket only, outside /var/run/postgresql so that the health check fails
#       meanwhile), run init.sql (extension, the two default models, the default query table,
#       database defaults) and /docker-entrypoint-initdb.d/*.sql|*.sh, stop it; then (every
#       start) exec postgres as PID 1.
#   anything else: exec'd as given (`psql`, `bash`, ...).
#
# Environment: PGDATA (/var/lib/postgresql/data, the volume), PGPORT (5432), POSTGRES_DB
# (postgres: the database that gets the extension and whose auto-encoding queues the workers
# drain), POSTGRES_PASSWORD (the postgres role's password; TCP connections then need it:
# scram-sha-256), POSTGRES_HOST_AUTH_METHOD (overrides that: trust, scram-sha-256, md5, ...;
# without a password the default is trust, with a warning), POSTGRES_INITDB_ARGS,
# LR_WORKERS (1: lightretriever.workers), LR_MODEL_ROOT (/opt/lightretriever/models).
# Started as root it prepares $PGDATA and /var/run/postgresql and re-executes itself as postgres.
set -Eeuo pipefail

BIN=/usr/lib/postgresql/15/bin
SHARE=/usr/local/share/lightretriever
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_DB=${POSTGRES_DB:-postgres}
LR_WORKERS=${LR_WORKERS:-1}
LR_MODEL_ROOT=${LR_MODEL_ROOT:-/opt/lightretriever/models}
log() { printf 'lightretriever-entrypoint: %s\n' "$*" >&2; }

if [ $# -eq 0 ] || [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  # A fresh volume, or one a previous container wrote: the server's files belong to postgres.
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 700 "$PGDATA"
  chown postgres:postgres /var/run/postgresql
  chmod 2775 /var/run/postgresql
  export HOME=/var/lib/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

first_start() {
  local auth=${POSTGRES_HOST_AUTH_METHOD:-}
  if [ -z "$auth" ]; then
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then auth=scram-sha-256; else
      auth=trust
      log "WARNING: no POSTGRES_PASSWORD: TCP connections are trusted (any role, no password)."
      log "         Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD) for anything but a local test."
    fi
  fi
  log "initializing $PGDATA (host authentication: $auth)"
  local pwfile=() pw=""
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pw=$(umask 077; mktemp /tmp/lightretriever-pw.XXXXXX)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
    pwfile=(--pwfile="$pw")
  fi
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is word-split on purpose (as upstream's image)
  "$BIN/initdb" -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$auth" "${pwfile[@]}" ${POSTGRES_INITDB_ARGS:-} >/dev/null
  [ -z "$pw" ] || rm -f "$pw"
  touch "$PGDATA/lightretriever-init.pending"  # removed when the first start is complete
  printf '\n# lightretriever image\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  cat >> "$PGDATA/postgresql.conf" <<CONF

# lightretriever image (docker/entrypoint.sh, first start)
listen_addresses = '*'
shared_preload_libraries = 'lightretriever'
lightretriever.workers = $LR_WORKERS
CONF

  local sock; sock=$(mktemp -d /tmp/lightretriever-init.XXXXXX)
  "$BIN/pg_ctl" -D "$PGDATA" -w -t 300 -o "-c listen_addresses='' -k $sock" start
  local psql=(psql -X -v ON_ERROR_STOP=1 -q -h "$sock" -U postgres)
  if [ "$POSTGRES_DB" != postgres ]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE $(printf '"%s"' "${POSTGRES_DB//\"/\"\"}")"
  fi
  log "creating the extension and registering the default models in database $POSTGRES_DB"
  "${psql[@]}" -d "$POSTGRES_DB" -v db="$POSTGRES_DB" -v models="$LR_MODEL_ROOT" -f "$SHARE/init.sql"
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) log "running $f"; PGHOST=$sock PGUSER=postgres PGDATABASE=$POSTGRES_DB bash "$f";;
      *.sql) log "running $f"; "${psql[@]}" -d "$POSTGRES_DB" -f "$f";;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql[@]}" -d "$POSTGRES_DB";;
      *) [ -e "$f" ] && log "ignoring $f";;
    esac
  done
  "$BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 300 stop
  rmdir "$sock" 2>/dev/null || true
  rm "$PGDATA/lightretriever-init.pending"
  log "first start done"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then first_start; fi
if [ -e "$PGDATA/lightretriever-init.pending" ]; then
  log "ERROR: the first start in $PGDATA did not finish (see the log of that start);"
  log "       remove the volume's contents to initialize again."
  exit 1
fi
exec "$BIN/postgres" -D "$PGDATA" "$@"
