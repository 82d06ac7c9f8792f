#!/usr/bin/env bash
# Runs a command inside a Debian root file system made by scripts/setup_pg_major.sh (root).
# Usage: rootfs_run.sh ROOT COMMAND [ARG...]
# The command sees the same paths as here for what the tests share with this machine: the
# checkout's parent folder (the repository and ../shared), /root (rustup, cargo, its registry),
# /opt/lightretriever (the models) and /tmp (test models, clusters, sockets). Everything else —
# /usr above all, the other release's glibc and PostgreSQL — is the root file system's own. The
# mounts live in a private mount namespace (unshare), so they go when the command ends, however
# it ends.
set -euo pipefail
ROOT=${1:?usage: rootfs_run.sh ROOT COMMAND [ARG...]}
shift
top=$(cd "$(dirname "$0")/../.." && pwd)
[ -x "$ROOT/bin/sh" ] || { echo "rootfs_run.sh: no root file system at $ROOT" >&2; exit 2; }
exec unshare --mount --propagation private -- bash -euo pipefail -c '
  root=$1 top=$2; shift 2
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  for d in "$top" /root /opt/lightretriever /tmp; do
    mkdir -p "$root$d"
    mount --bind "$d" "$root$d"
  done
  cp /etc/resolv.conf /etc/hosts "$root/etc/" 2>/dev/null || true  # names, as here (sudo looks the host up)
  exec chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTFLAGS="${RUSTFLAGS:-}" LR_MODEL_ROOT="${LR_MODEL_ROOT:-/opt/lightretriever/models}" \
    LR_TEST_MODELS="${LR_TEST_MODELS:-/tmp/lightretriever-test-models}" \
    bash -c "cd \"\$0\" && exec \"\$@\"" "$PWD" "$@"
' rootfs_run "$ROOT" "$top" "$@"
