#!/usr/bin/env bash
# `make check-dockerfile`: build docker/Dockerfile itself — every stage, as `docker build` would —
# with buildah, on a machine with no Docker engine and no image registry, and compare the
# result's file layout with `make image`'s. The Dockerfile's two base images are replaced by local
# stand-ins (imported into a private buildah store, never pushed anywhere):
#   debian:bookworm-slim     mmdebstrap bookworm minbase with debian:bookworm-slim's dpkg excludes
#   rust:<RUST_VERSION>-bookworm   the same plus build-essential, git, curl, and this machine's
#                            Rust toolchain (rustc --print sysroot) as /usr/local/rustup, cargo on PATH
# Everything else the Dockerfile fetches comes from where it would under Docker: Debian's mirrors
# (apt-get, apt-get source pgvector), crates.io (cargo-pgrx, the crates) and PyPI (the models).
# Slow: a release build of the extension and of cargo-pgrx inside the builder stage (~20 min on 2
# cores). Root. Output: target/image/dockerfile/lightretriever-dockerfile-oci.tar and a layout
# diff; LR_IMAGE_ARCHIVE=that archive bash scripts/test_image.sh starts it as test-image does.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${LR_IMAGE_DIR:-target/image}")/dockerfile
RUST_VERSION=$(sed -n 's/^ARG RUST_VERSION=//p' docker/Dockerfile)
STORE=(--root "$OUT/storage" --runroot /run/lightretriever-dockerfile-check)
MIRROR=${LR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LR_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
log() { printf '[check-dockerfile %4ds] %s\n' "$SECONDS" "$*"; }
mkdir -p "$OUT/tmp"
export TMPDIR=$OUT/tmp
slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*'
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
      --dpkgopt='path-exclude=/usr/share/linda/*' --dpkgopt='path-exclude=/usr/share/locale/*')
sources=("deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY_MIRROR bookworm-security main")
# Like Docker's Debian images: no host resolv.conf or hostname, apt keeps no downloaded packages
# (their /etc/apt/apt.conf.d/docker-clean), /dev empty.
img_hooks=(--customize-hook='rm -f "$1"/etc/resolv.conf; : > "$1"/etc/hostname'
           --customize-hook='printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$1"/etc/apt/apt.conf.d/docker-clean')
# This machine's extra CA certificates (public certificates of its TLS egress proxy, if any) go
# into the stand-ins, where ca-certificates (installed by the stages that fetch over HTTPS)
# picks them up: the stages then reach crates.io and PyPI as they would from Docker Hub's images.
shopt -s nullglob
extra_ca=(/usr/local/share/ca-certificates/*.crt)
if [ ${#extra_ca[@]} -gt 0 ]; then
  img_hooks+=(--customize-hook='mkdir -p "$1"/usr/local/share/ca-certificates'
              --customize-hook="copy-in ${extra_ca[*]} /usr/local/share/ca-certificates/")
fi

# LR_COMPARE_ONLY=1: compare the archive built before with make image's, without building.
if [ -n "${LR_COMPARE_ONLY:-}" ]; then :
elif ! podman "${STORE[@]}" image exists docker.io/library/debian:bookworm-slim; then
  log "stand-in debian:bookworm-slim (mmdebstrap)"
  mmdebstrap --mode=root --variant=minbase "${slim[@]}" "${img_hooks[@]}" bookworm "$OUT/slim.tar" "${sources[@]}" 2>"$OUT/slim.log"
  tar --delete -f "$OUT/slim.tar" --wildcards './dev/?*'
  podman "${STORE[@]}" import -q --change 'CMD ["bash"]' "$OUT/slim.tar" docker.io/library/debian:bookworm-slim >/dev/null
  rm -f "$OUT/slim.tar"
fi
if [ -n "${LR_COMPARE_ONLY:-}" ]; then :
elif ! podman "${STORE[@]}" image exists "docker.io/library/rust:$RUST_VERSION-bookworm"; then
  sysroot=$(rustc --print sysroot)
  [ "$(rustc --version | cut -d' ' -f2)" = "$RUST_VERSION" ] || { echo "this machine's rustc is not $RUST_VERSION" >&2; exit 1; }
  log "stand-in rust:$RUST_VERSION-bookworm (mmdebstrap + $sysroot)"
  # No rustup server is reachable: a rustup that only confirms components the copied toolchain has.
  cat > "$OUT/rustup-stand-in" <<'SH'
#!/bin/sh
# Stand-in rustup (scripts/check_dockerfile.sh): the toolchain was copied with its components.
[ "$1 $2" = "component add" ] || { echo "stand-in rustup: '$*' is not supported" >&2; exit 1; }
shift 2
for c in "$@"; do [ -x "/usr/local/cargo/bin/$c" ] || { echo "stand-in rustup: no $c" >&2; exit 1; }; done
SH
  chmod 755 "$OUT/rustup-stand-in"
  mmdebstrap --mode=root --variant=minbase --include=build-essential,ca-certificates,curl,git,pkg-config \
    "${img_hooks[@]}" \
    --customize-hook="mkdir -p \"\$1\"/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu \"\$1\"/usr/local/cargo/bin" \
    --customize-hook="sync-in $sysroot /usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu" \
    --customize-hook="rm -rf \"\$1\"/usr/local/rustup/toolchains/*/share/doc" \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook="for b in cargo rustc rustdoc rustfmt; do ln -s ../../rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu/bin/\$b \"\$1\"/usr/local/cargo/bin/\$b; done" \
    --customize-hook="copy-in $OUT/rustup-stand-in /usr/local/cargo/bin/" \
    --customize-hook='mv "$1"/usr/local/cargo/bin/rustup-stand-in "$1"/usr/local/cargo/bin/rustup' \
    bookworm "$OUT/rust.tar" "${sources[@]}" 2>"$OUT/rust.log"
  tar --delete -f "$OUT/rust.tar" --wildcards './dev/?*'
  podman "${STORE[@]}" import -q --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    "$OUT/rust.tar" "docker.io/library/rust:$RUST_VERSION-bookworm" >/dev/null
  rm -f "$OUT/rust.tar"
fi

# chroot isolation: RUN steps without an OCI runtime (whose rlimits and cgroups this host refuses).
# The quick stages first (a mistake there shows in minutes); --layers: the full build reuses them.
bud=(buildah "${STORE[@]}" bud --isolation chroot --pull=never --layers --format docker -f docker/Dockerfile)
[ -n "${LR_COMPARE_ONLY:-}" ] || {
for stage in pgvector models; do
  log "buildah bud --target $stage"
  "${bud[@]}" --target "$stage" -t "localhost/lightretriever-stage:$stage" . >"$OUT/bud-$stage.log" 2>&1 \
    || { tail -40 "$OUT/bud-$stage.log"; exit 1; }
done
log "buildah bud -f docker/Dockerfile (all stages; the builder's release build takes most of the time)"
"${bud[@]}" -t localhost/lightretriever:dockerfile . >"$OUT/bud.log" 2>&1 || { tail -40 "$OUT/bud.log"; exit 1; }
buildah "${STORE[@]}" push -q localhost/lightretriever:dockerfile \
  "oci-archive:$OUT/lightretriever-dockerfile-oci.tar:lightretriever:latest" >/dev/null
log "built: $OUT/lightretriever-dockerfile-oci.tar"
}

log "file layouts: Dockerfile image vs make image"
listing() { # archive → sorted "path mode owner size" of its (single or last-wins) layers
  python3 - "$1" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":")[1])
m = json.load(blob(json.load(t.extractfile("index.json"))["manifests"][0]["digest"]))
files = {}
for layer in m["layers"]:
    with tarfile.open(fileobj=blob(layer["digest"]), mode="r|*") as lt:
        for e in lt:
            name = e.name.lstrip("./").rstrip("/")
            base = name.rsplit("/", 1)[-1]
            if base.startswith(".wh."):
                gone = name.rsplit("/", 1)[0] + "/" + base[4:] if "/" in name else base[4:]
                files = {k: v for k, v in files.items() if k != gone and not k.startswith(gone + "/")}
                continue
            kind = "d" if e.isdir() else "l" if e.issym() else "f"
            files[name] = f"{kind} {e.mode & 0o7777:o} {e.uid}:{e.gid}" + (f" {e.size}" if kind == "f" else "") + (f" -> {e.linkname}" if e.issym() else "")
for k in sorted(files):
    print(k, files[k])
PY
}
listing "$OUT/lightretriever-dockerfile-oci.tar" > "$OUT/dockerfile.files"
listing "$(dirname "$OUT")/lightretriever-oci.tar" > "$OUT/make-image.files"
# What is ours must be identical (the extension, pgvector, the models, the scripts, the links).
# (The stand-in's extra CA certificates under usr/local/share/ca-certificates are not ours.)
ours='^(usr/lib/postgresql/15/lib/(lightretriever|vector)|usr/share/postgresql/15/extension/(lightretriever|vector)|opt/lightretriever|usr/local/(bin|share/lightretriever)|docker-entrypoint-initdb.d|var/lib/postgresql|var/run/postgresql|run/postgresql)'
# lightretriever.so's size depends on the build directory (paths in panic messages): not compared.
ours_of() { grep -E "$ours" "$1" | sed -E 's|^(usr/lib/postgresql/15/lib/lightretriever.so f [0-7]+ [0-9]+:[0-9]+) [0-9]+$|\1|'; }
if diff <(ours_of "$OUT/dockerfile.files") <(ours_of "$OUT/make-image.files") > "$OUT/ours.diff"; then
  log "ok: the extension, pgvector, models, scripts and data directories are the same (paths, modes, owners, sizes)"
else
  log "DIFFERENT (ours): $OUT/ours.diff"; head -40 "$OUT/ours.diff"; exit 1
fi
# Debian's part: the same packages, hence (almost) the same paths; sizes differ where a log or cache does.
diff <(cut -d' ' -f1 "$OUT/dockerfile.files") <(cut -d' ' -f1 "$OUT/make-image.files") > "$OUT/paths.diff" || true
log "paths only in one of them: $(grep -c '^[<>]' "$OUT/paths.diff" || true) (see $OUT/paths.diff)"

log "image configuration: buildah's reading of the Dockerfile vs scripts/oci_archive.py's (make image)"
buildah "${STORE[@]}" inspect --type image localhost/lightretriever:dockerfile | python3 -c '
import json, sys
sys.path.insert(0, "scripts")
import oci_archive
built = json.load(sys.stdin)["Docker"]["config"]
ours = oci_archive.image_config("docker/Dockerfile", "final")
# Labels: the builder adds its own (io.buildah.version); ours must all be there.
same = lambda k: ({**built.get(k, {}), **ours[k]} == built.get(k)) if k == "Labels" else built.get(k) == ours[k]
bad = [k for k in sorted(ours) if not same(k)]
for k in bad:
    print(f"  {k}: Dockerfile image {built.get(k)!r}, make image {ours[k]!r}")
sys.exit(1 if bad else 0)
' && log "ok: $(python3 -c 'import sys; sys.path.insert(0, "scripts"); import oci_archive; print(", ".join(sorted(oci_archive.image_config("docker/Dockerfile", "final"))))') agree"
