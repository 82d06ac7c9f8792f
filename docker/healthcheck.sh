#!/bin/bash
# The image's health check (/usr/local/bin/lightretriever-healthcheck; Dockerfile HEALTHCHECK):
# healthy once the server accepts connections on its socket (not the private one of the first
# start) and a query is encoded with the default model's table, i.e. the first start finished.
set -euo pipefail
db=${POSTGRES_DB:-postgres}
/usr/lib/postgresql/15/bin/pg_isready -q -h /var/run/postgresql -U postgres -d "$db"
[ "$(psql -X -qtA -h /var/run/postgresql -U postgres -d "$db" \
      -c "SELECT lightretriever.lr_encode_query('health check') IS NOT NULL")" = t ]
