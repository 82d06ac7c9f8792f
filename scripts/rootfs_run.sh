#!/usr/bin/env bash
# Runs a command inside a Debian root file system made by scripts/setup_pg_major.sh (root).
# Usage: rootfs_run.sh ROOT COMMAND [ARG...]
# The command sees, at the same paths as here, what the tests share with this machine: the
# checkout and ../shared beside it, /root, CARGO_HOME and RUSTUP_HOME (the toolchain and cargo's
# registry), /opt/lightretriever and LR_MODEL_ROOT (the models), LR_TEST_MODELS and /tmp (test
# models, clusters, sockets). Everything else — /usr above all, the other release's glibc and
# PostgreSQL — is the root file system's own. Mounts and processes live in private mount and PID
# namespaces: when the command ends, however it ends, its mounts go and any server it left
# running is killed.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "rootfs_run.sh: run as root (mount and chroot)" >&2; exit 2; }
ROOT=${1:?usage: rootfs_run.sh ROOT COMMAND [ARG...]}
shift
[ -x "$ROOT/bin/sh" ] || { echo "rootfs_run.sh: no root file system at $ROOT" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_HOME=${CARGO_HOME:-/root/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-/root/.rustup}
export LR_MODEL_ROOT=${LR_MODEL_ROOT:-/opt/lightretriever/models} LR_TEST_MODELS=${LR_TEST_MODELS:-/tmp/lightretriever-test-models}
shares=("$repo" /root "$CARGO_HOME" "$RUSTUP_HOME" /opt/lightretriever "$LR_MODEL_ROOT" "$LR_TEST_MODELS" /tmp)
[ -d "$repo/../shared" ] && shares+=("$(cd "$repo/../shared" && pwd)")
for d in "${shares[@]}"; do
  case "$(realpath -m "$d")/" in
    /|/usr/*|/etc/*|/var/*|/bin/*|/sbin/*|/lib/*|/lib64/*|/proc/*|/sys/*|/dev/*|/run/*)
      echo "rootfs_run.sh: $d would hide the root file system's own files; move it" >&2; exit 2;;
  esac
done
exec unshare --mount --pid --fork --kill-child --propagation private -- bash -euo pipefail -c '
  root=$1 repo=$2 n=$3; shift 3
  # The shared folders first: their recursive binds then copy no mount made here.
  for d in "${@:1:n}"; do
    [ -e "$d" ] || mkdir -p "$d"
    mkdir -p "$root$d"
    mount --rbind "$d" "$root$d"
  done
  shift "$n"
  mount -t proc proc "$root/proc"  # the processes of this PID namespace only
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  # Names as here (sudo looks the host up); --remove-destination: never through a link in root.
  cp --remove-destination /etc/resolv.conf /etc/hosts "$root/etc/" 2>/dev/null || true
  pass=()
  for v in RUSTFLAGS CARGO_HOME RUSTUP_HOME LR_MODEL_ROOT LR_TEST_MODELS LR_SHARED_DIR LR_CPU_GEMM \
           http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v+x}" ] && pass+=("$v=${!v}")
  done
  exec chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 "${pass[@]}" \
    PATH="$CARGO_HOME/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    bash -c "cd \"\$0\" && exec \"\$@\"" "$PWD" "$@"
' rootfs_run "$ROOT" "$repo" "${#shares[@]}" "${shares[@]}" "$@"
