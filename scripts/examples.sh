#!/usr/bin/env bash
# The example apps of examples/ (SQLAlchemy, Django, sqlx), each with its own test, against a
# RUNNING cluster that preloads lightretriever (scripts/e2e.sh runs this while its cluster is up;
# `make test-examples` for one of your own). Usage: examples.sh [sqlalchemy] [django] [sqlx]
#   LR_TEST_PGHOST (socket directory) and LR_TEST_PGPORT (default 28815) name the cluster.
#   LR_EXAMPLES_ROLES=1 runs each app as a role of its own (no superuser) instead of postgres.
#
# The apps share one database (LR_EXAMPLES_DB, default postgres; any database is drained) and
# each gets a schema of its own, emptied at every run: lr_example_sqlalchemy, lr_example_django,
# lr_example_sqlx. This script
# does the superuser's part once (the extension, the models, the query table); each app's own
# migration creates its table and enables auto-encoding, as a real app's would. Each app's
# dependencies go into its own directory (examples/*/.venv, examples/rust-sqlx/target), reused
# while its requirements.txt / Cargo.lock is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LR_TEST_PGHOST:?LR_TEST_PGHOST (socket directory of the cluster) is not set: see scripts/e2e.sh or make test-examples}"
export PGHOST=$LR_TEST_PGHOST PGPORT=${LR_TEST_PGPORT:-28815}
MODEL_ROOT=${LR_MODEL_ROOT:-/opt/lightretriever/models}
TINY=${LR_TEST_MODELS:-/tmp/lightretriever-test-models}
if [ -z "${LR_EXAMPLE_CORPUS:-}" ]; then
  LR_EXAMPLE_CORPUS=../shared/data/cisi/corpus.jsonl
  [ -f "$LR_EXAMPLE_CORPUS" ] || LR_EXAMPLE_CORPUS=scripts/sample/corpus.jsonl
fi
export LR_EXAMPLE_CORPUS=$(realpath "$LR_EXAMPLE_CORPUS")
APPS=("$@"); [ ${#APPS[@]} -gt 0 ] || APPS=(sqlalchemy django sqlx)
psql_() { psql -X -q -v ON_ERROR_STOP=1 -U postgres "$@"; }
started=$SECONDS

for m in "$MODEL_ROOT/all-minilm-l6-v2" "$MODEL_ROOT/splade-tiny" "$TINY/pe-rank-tiny" "$TINY/jina-bert-tiny"; do
  [ -f "$m/config.json" ] || { echo "examples: no model at $m (scripts/setup.sh installs the default models, make test-models the tiny ones)" >&2; exit 1; }
done
psql_ -d postgres -tAc "SHOW lightretriever.workers" >/dev/null \
  || { echo "examples: the cluster at $PGHOST:$PGPORT must preload lightretriever (shared_preload_libraries)" >&2; exit 1; }
DB=${LR_EXAMPLES_DB:-postgres}
export PGDATABASE=$DB

echo "== examples: superuser set-up in database $DB (extension, models, query table)"
psql_ -d "$DB" -v dense="$MODEL_ROOT/all-minilm-l6-v2" -v sparse="$MODEL_ROOT/splade-tiny" \
  -v jina="$TINY/jina-bert-tiny" -v perank="$TINY/pe-rank-tiny" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
SELECT lightretriever.lr_register_model('all-minilm-l6-v2', :'dense')
 WHERE NOT EXISTS (SELECT FROM lightretriever.lr_models WHERE name = 'all-minilm-l6-v2') \g /dev/null
SELECT lightretriever.lr_register_model('splade-tiny', :'sparse')
 WHERE NOT EXISTS (SELECT FROM lightretriever.lr_models WHERE name = 'splade-tiny') \g /dev/null
SELECT lightretriever.lr_register_model('jina-bert-tiny', :'jina')
 WHERE NOT EXISTS (SELECT FROM lightretriever.lr_models WHERE name = 'jina-bert-tiny') \g /dev/null
SELECT lightretriever.lr_register_model('pe-rank-tiny', :'perank', '{"encoder": "jina-bert-tiny"}')
 WHERE NOT EXISTS (SELECT FROM lightretriever.lr_models WHERE name = 'pe-rank-tiny') \g /dev/null
SELECT lightretriever.lr_build_query_table('all-minilm-l6-v2')
 WHERE NOT EXISTS (SELECT FROM lightretriever.lr_query_tables WHERE model = 'all-minilm-l6-v2') \g /dev/null
SQL
echo "   ready ($((SECONDS - started)) s)"

# A fresh schema for one app, owned by the role it runs as.
fresh_schema() {
  local schema=$1 owner=postgres
  if [ "${LR_EXAMPLES_ROLES:-0}" = 1 ]; then
    owner=$schema
    psql_ -d "$DB" -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$owner') THEN CREATE ROLE $owner LOGIN; END IF; END \$\$"
  fi
  psql_ -d "$DB" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS $schema CASCADE" -c "CREATE SCHEMA $schema AUTHORIZATION $owner"
  export APP_SCHEMA=$schema PGUSER=$owner
}

# examples/NAME/.venv with examples/NAME/requirements.txt installed (kept while it is unchanged).
venv() {
  local dir=examples/$1
  if ! cmp -s "$dir/requirements.txt" "$dir/.venv/requirements.installed" 2>/dev/null; then
    echo "   installing $dir/requirements.txt into $dir/.venv"
    python3 -m venv --clear "$dir/.venv"
    "$dir/.venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt"
    cp "$dir/requirements.txt" "$dir/.venv/requirements.installed"
  fi
}

for app in "${APPS[@]}"; do
  t0=$SECONDS
  echo "== examples/$app"
  case $app in
    sqlalchemy)
      fresh_schema lr_example_sqlalchemy
      venv python-sqlalchemy
      (cd examples/python-sqlalchemy && .venv/bin/python -m pytest -q -p no:cacheprovider);;
    django)
      fresh_schema lr_example_django
      venv django
      (cd examples/django && .venv/bin/python -m pytest -q -p no:cacheprovider);;
    sqlx)
      fresh_schema lr_example_sqlx
      (cd examples/rust-sqlx && CARGO_TARGET_DIR=$PWD/target cargo test --locked -q --test app);;
    *) echo "examples: unknown app $app (sqlalchemy, django, sqlx)" >&2; exit 2;;
  esac
  echo "   examples/$app passed ($((SECONDS - t0)) s)"
done
echo "== examples: all passed ($((SECONDS - started)) s)"
