#!/usr/bin/env bash
# Idempotent set-up for `make image` / `make test-image` on Debian bookworm (root, or sudo):
# the Debian packages that build the image without a Docker engine and start it.
#   mmdebstrap        the image's root filesystem from Debian packages (scripts/build_image.sh)
#   podman, runc      start the image (scripts/test_image.sh); runc, not crun: Debian's crun 1.8
#                     refuses hybrid cgroup v1/v2 hosts ("cgroups in hybrid mode not supported")
#   skopeo            inspects the archive as an OCI image, independently of our writer
#   postgresql-client-15, python3   the test's psql; scripts/oci_archive.py
# Not called by scripts/setup.sh: the extension's own set-up needs none of this.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
pkgs=(mmdebstrap podman runc skopeo postgresql-client-15 python3 debian-archive-keyring ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup-image] installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
