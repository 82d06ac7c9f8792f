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
# shellcheck source=scripts/debs.sh
source "$(dirname "$0")/debs.sh"
install_missing_debs setup-image mmdebstrap podman runc skopeo postgresql-client-15 python3 debian-archive-keyring ca-certificates
