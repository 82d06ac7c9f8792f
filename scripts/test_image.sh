#!/usr/bin/env bash
# `make test-image`: start target/image/lightretriever-oci.tar through its own entrypoint, wait for
# its health check, then through psql over TCP: a table auto-encoded dense + sparse, documents
# inserted, lr_wait_for_encoding, hybrid lr_search hits, and lr_rerank with the tiny test PE-Rank
# checkpoint (its JinaBERT encoder registered with it) copied into the running container.
# Everything is torn down at the end, pass or fail.
#
#   LR_IMAGE_RUNNER  auto (default: podman when it can start a container here, else chroot),
#                    podman, or chroot (the image's root filesystem unpacked, run under
#                    unshare --pid --mount + chroot, sharing the host's network)
#   LR_IMAGE_NETWORK bridge (default: -p 127.0.0.1:PORT:5432) or host (podman only)
#   LR_IMAGE_PORT    loopback port (28960)
#   LR_IMAGE_ARCHIVE the archive (target/image/lightretriever-oci.tar)
#   LR_IMAGE_EXPECT  override the expected top hit of the first query (to see the test fail)
# Root. Podman runs with its own storage under target/image/podman (the host's image store is
# not touched) and with runc: Debian's crun 1.8 refuses hybrid cgroup hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath "${LR_IMAGE_DIR:-target/image}")
ARCHIVE=$(realpath -m "${LR_IMAGE_ARCHIVE:-$OUT/lightretriever-oci.tar}")
PORT=${LR_IMAGE_PORT:-28960}
RUNNER=${LR_IMAGE_RUNNER:-auto}
NETWORK=${LR_IMAGE_NETWORK:-bridge}
NAME=lightretriever-test-$PORT
PASSWORD=lr-image-test
HEALTH_TIMEOUT=${LR_IMAGE_HEALTH_TIMEOUT:-600}
log() { printf '[test-image %3ds] %s\n' "$SECONDS" "$*"; }
fail() { printf '[test-image %3ds] FAIL: %s\n' "$SECONDS" "$*" >&2; exit 1; }

[ -f "$ARCHIVE" ] || fail "$ARCHIVE is missing: run make image"
if ss -Hltn "sport = :$PORT" | grep -q .; then fail "port $PORT is in use (LR_IMAGE_PORT=...)"; fi

# The tiny test reranker and its encoder (deterministic files; written here, not shared with
# another checkout's /tmp/lightretriever-test-models, which make test rewrites).
TEST_MODELS=$OUT/test-models
if [ ! -f "$TEST_MODELS/pe-rank-tiny/config.json" ] || [ ! -f "$TEST_MODELS/jina-bert-tiny/config.json" ]; then
  log "writing the tiny test models (scripts/make_test_models.py)"
  python3 scripts/make_test_models.py --out "$TEST_MODELS" >/dev/null
fi
chmod -R a+rX "$TEST_MODELS"

# ---- runners: start / health / copy-in / logs / stop ---------------------------------------------
PODMAN=(podman --root "$OUT/podman/storage" --runroot "/run/lightretriever-image-test-$PORT" --runtime runc
        --cgroup-manager cgroupfs --events-backend none)
# The server's limits: podman asks for more open files and processes than this machine's hard
# limits (no CAP_SYS_RESOURCE), so pass what we have (capped at what conmon is given).
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
ROOTFS=$OUT/test-rootfs
CHROOT_PID=""

podman_works() {
  command -v podman >/dev/null || return 1
  "${PODMAN[@]}" info >/dev/null 2>&1
}

image_config() { # the image's config JSON, from the archive
  python3 - "$ARCHIVE" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: json.load(t.extractfile("blobs/sha256/" + d.split(":")[1]))
m = blob(json.load(t.extractfile("index.json"))["manifests"][0]["digest"])
print(json.dumps({"config": blob(m["config"]["digest"])["config"], "layer": m["layers"][0]["digest"]}))
PY
}

start_podman() { # returns non-zero (no exit) when podman cannot load or start the image
  log "podman load"
  IMAGE=$("${PODMAN[@]}" load -q -i "$ARCHIVE" | sed -n 's/^Loaded image[^:]*: //p' | cut -d, -f1)
  [ -n "$IMAGE" ] || { log "podman load named no image"; return 1; }
  local net=(-p "127.0.0.1:$PORT:5432")
  [ "$NETWORK" = host ] && net=(--network host -e "PGPORT=$PORT")
  # Podman reads HEALTHCHECK only from Docker-format images; this one is OCI: pass the image's.
  log "podman run (network $NETWORK)"
  "${PODMAN[@]}" run -d --name "$NAME" "${net[@]}" \
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
    -e POSTGRES_PASSWORD="$PASSWORD" \
    --health-cmd /usr/local/bin/lightretriever-healthcheck --health-interval 0 \
    "$IMAGE" >/dev/null || return 1
}
health_podman() { "${PODMAN[@]}" healthcheck run "$NAME" >/dev/null 2>&1; }
exec_podman() { "${PODMAN[@]}" exec "$NAME" "$@"; }
restart_podman() { "${PODMAN[@]}" restart -t 60 "$NAME" >/dev/null; }
running_podman() { [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }
copy_in_podman() { "${PODMAN[@]}" cp "$1" "$NAME:$2"; }
logs_podman() { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -"${1:-40}"; }
stop_podman() {
  "${PODMAN[@]}" stop -t 60 "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rm -f -v "$NAME" >/dev/null 2>&1 || true
  [ -z "${IMAGE:-}" ] || "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  umount -R "$OUT/podman/storage/overlay" 2>/dev/null || true
  rm -rf "$OUT/podman" "/run/lightretriever-image-test-$PORT"
}

start_chroot() {
  local cfg; cfg=$(image_config)
  if [ -z "${keep:-}" ]; then
    log "unpacking the image's layer into $ROOTFS"
    rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
    tar -xOf "$ARCHIVE" "blobs/sha256/$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["layer"].split(":")[1])' "$cfg")" \
      | tar -xz --numeric-owner --xattrs --xattrs-include='*' -C "$ROOTFS"
  fi
  local env entry
  mapfile -t env < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["config"]["Env"]))' "$cfg")
  mapfile -t entry < <(python3 -c 'import json,sys; c=json.loads(sys.argv[1])["config"]; print("\n".join(c.get("Entrypoint",[])+c.get("Cmd",[])))' "$cfg")
  log "unshare --pid --mount + chroot: ${entry[*]} (host network, port $PORT)"
  # A new PID and mount namespace: /proc, /dev (the host's, bound), a private /dev/shm; the
  # server is PID 1 there, as in a container, and gets SIGINT on stop.
  setsid unshare --fork --pid --mount --kill-child=SIGKILL -- bash -c '
    set -e; r=$1; shift
    mount --make-rprivate /
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs -o mode=1777 shm "$r/dev/shm"
    exec chroot "$r" /usr/bin/env -i "$@"' _ "$ROOTFS" "${env[@]}" PGPORT="$PORT" POSTGRES_PASSWORD="$PASSWORD" \
    "${entry[@]}" -c listen_addresses=127.0.0.1 >>"$OUT/test-image-server.log" 2>&1 &
  CHROOT_PID=$!
}
server_pid_chroot() { pgrep -P "$CHROOT_PID" | head -1; }
exec_chroot() { # in the server's namespaces and root, with the image's PATH
  local p; p=$(server_pid_chroot) || return 1; [ -n "$p" ] || return 1
  nsenter -t "$p" -m -p -r -w /usr/bin/env -i PATH=/usr/lib/postgresql/15/bin:/usr/bin:/bin PGPORT="$PORT" "$@"
}
health_chroot() { exec_chroot /usr/local/bin/lightretriever-healthcheck >/dev/null 2>&1; }
restart_chroot() { local keep=1; stop_chroot; start_chroot; }
running_chroot() { kill -0 "$CHROOT_PID" 2>/dev/null; }
copy_in_chroot() { rm -rf "$ROOTFS$2" && cp -a "$1" "$ROOTFS$2"; }
logs_chroot() { tail -"${1:-40}" "$OUT/test-image-server.log"; }
stop_chroot() {
  if [ -n "$CHROOT_PID" ] && kill -0 "$CHROOT_PID" 2>/dev/null; then
    local p; p=$(server_pid_chroot || true)
    [ -n "$p" ] && kill -INT "$p" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$CHROOT_PID" 2>/dev/null || break; sleep 1; done
    kill "$CHROOT_PID" 2>/dev/null || true
    wait "$CHROOT_PID" 2>/dev/null || true
  fi
  [ -n "${keep:-}" ] || rm -rf "$ROOTFS"
}

case "$RUNNER" in auto|podman|chroot) ;; *) fail "LR_IMAGE_RUNNER=$RUNNER (auto, podman or chroot)";; esac

wait_healthy() {
  local t0=$SECONDS
  until health_$RUNNER; do
    running_$RUNNER || { logs_$RUNNER 60; fail "the container stopped before it was healthy"; }
    [ $((SECONDS - t0)) -lt "$HEALTH_TIMEOUT" ] || { logs_$RUNNER 60; fail "not healthy after ${HEALTH_TIMEOUT}s"; }
    sleep 1
  done
  HEALTHY_AFTER=$((SECONDS - t0))
}
rm -f "$OUT/test-image-server.log"
t_start=$SECONDS
if [ "$RUNNER" = auto ]; then
  # podman when it can load and start the image here; else the chroot runner.
  trap 'log "teardown"; stop_podman' EXIT
  if podman_works && start_podman; then RUNNER=podman; else
    log "podman cannot start the image here: the chroot runner instead"
    stop_podman; RUNNER=chroot
  fi
fi
trap 'log "teardown"; stop_$RUNNER' EXIT
case "$RUNNER" in
  podman) [ -n "${IMAGE:-}" ] || start_podman || { logs_podman 40; fail "podman could not start the image"; };;
  chroot) start_chroot;;
esac
log "waiting for the health check (first start: initdb, extension, models, query table)"
wait_healthy
t_healthy=$((SECONDS - t_start))
log "healthy after ${t_healthy}s"

# ---- SQL through the published port ------------------------------------------------------------
psql_() { PGPASSWORD=$PASSWORD psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
val() { psql_ -tA -c "$1"; }
check() { # what got want
  if [ "$2" = "$3" ]; then log "ok: $1 ($2)"; else logs_$RUNNER 20; fail "$1: got '$2', want '$3'"; fi
}

check "password authentication over TCP, search_path default" "$(val 'SHOW search_path')" '"$user", public, lightretriever'
check "shared_preload_libraries" "$(val 'SHOW shared_preload_libraries')" lightretriever
check "default models" "$(val "SELECT current_setting('lightretriever.default_model') || ',' || current_setting('lightretriever.default_sparse_model')")" "all-minilm-l6-v2,splade-tiny"
psql_ >/dev/null <<'SQL'
CREATE TABLE docs (id bigint PRIMARY KEY, body text);
SELECT lr_enable_auto_encoding('docs', 'body', 'all-minilm-l6-v2', 'splade-tiny');
INSERT INTO docs VALUES
  (1, 'The Dewey decimal classification organises library books by subject.'),
  (2, 'Photosynthesis: plant leaves turn sunlight, water and carbon dioxide into sugar.'),
  (3, 'The stock market fell sharply as investors sold their bank shares.'),
  (4, 'A recipe for bread: flour, water, yeast and salt, baked in a hot oven.'),
  (5, 'Volcanoes erupt molten lava and ash when magma rises through the crust.'),
  (6, 'The football match ended two goals to one after extra time.');
SQL
t0=$SECONDS
check "lr_wait_for_encoding" "$(val "SELECT lr_wait_for_encoding('docs', '5 minutes')")" t
log "auto-encoding of 6 rows (dense + sparse): $((SECONDS - t0))s"
check "rows with both vectors" "$(val 'SELECT count(*) FROM docs WHERE body_embedding IS NOT NULL AND body_sparse IS NOT NULL')" 6
expect_first=${LR_IMAGE_EXPECT:-4}
for q in "bread yeast oven:$expect_first" "volcano lava magma:5" "library classification of books:1" "plants sunlight sugar:2"; do
  query=${q%:*}; want=${q##*:}
  check "hybrid lr_search '$query' top hit" \
    "$(val "SELECT id FROM lr_search('docs', '$query', 3, mode => 'hybrid') ORDER BY score DESC LIMIT 1")" "$want"
done
check "the top hybrid hit has a dense and a sparse score" \
  "$(val "SELECT dense_score IS NOT NULL AND sparse_score IS NOT NULL FROM lr_search('docs', 'bread yeast oven', 1, mode => 'hybrid')")" t

# As postgres: reading another user's /proc/PID/maps needs CAP_SYS_PTRACE, which podman does not give root.
pid=$(val "SELECT inference_pid FROM lr_encoder_processes() WHERE inference_pid IS NOT NULL LIMIT 1")
[ -n "$pid" ] || fail "no inference process in lr_encoder_processes()"
if exec_$RUNNER setpriv --reuid=postgres --regid=postgres --init-groups grep -q 'libdnnl\.so\.2' "/proc/$pid/maps"; then log "ok: the inference process (pid $pid) has oneDNN (libdnnl.so.2) mapped"
else fail "the inference process (pid $pid) has not loaded libdnnl.so.2"; fi

rm -rf "$OUT/test-rerank-models" && mkdir -p "$OUT/test-rerank-models"
cp -a "$TEST_MODELS/pe-rank-tiny" "$TEST_MODELS/jina-bert-tiny" "$OUT/test-rerank-models/"
copy_in_$RUNNER "$OUT/test-rerank-models" /tmp/lr-test-models
psql_ -c "SELECT lr_register_model('jina-bert-tiny', '/tmp/lr-test-models/jina-bert-tiny') IS NOT NULL" \
      -c "SELECT lr_register_model('pe-rank-tiny', '/tmp/lr-test-models/pe-rank-tiny', '{\"encoder\": \"jina-bert-tiny\"}') IS NOT NULL" >/dev/null
ranked=$(val "SELECT string_agg(id::text, ',' ORDER BY rank) FROM lr_rerank('bread yeast oven', ARRAY[4, 2, 5], 'docs', 'pe-rank-tiny', text_column => 'body')")
log "lr_rerank('bread yeast oven', [4, 2, 5]) → [$ranked]"
check "lr_rerank returns a permutation of the ids" "$(tr , '\n' <<<"$ranked" | sort -n | paste -sd,)" "2,4,5"
check "lr_search(..., rerank => 3) reranks its top 3" \
  "$(val "SELECT count(rerank_score) FROM lr_search('docs', 'bread yeast oven', 5, rerank => 3, rerank_model => 'pe-rank-tiny')")" 3
log "restart: the data directory is kept, no second initialization"
restart_$RUNNER
wait_healthy
log "healthy again after ${HEALTHY_AFTER}s"
check "after the restart: the vectors and the query table are there" \
  "$(val "SELECT string_agg(id::text, ',') FROM (SELECT id FROM lr_search('docs', 'volcano lava magma', 1, mode => 'hybrid')) s")" 5
check "one first start in the server log" "$(logs_$RUNNER 100000 | grep -c 'first start done')" 1
log "PASS (first start healthy after ${t_healthy}s; runner $RUNNER)"
