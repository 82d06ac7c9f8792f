#!/bin/sh
# Runs inside the final image's root filesystem once its Debian packages (docker/packages), the
# extension, pgvector, the models and these scripts are in place — in the Dockerfile's final stage
# and in scripts/build_image.sh's mmdebstrap chroot alike, so that both images have one layout.
set -eu
S=/usr/local/share/lightretriever
# The Debian package's default cluster (/etc/postgresql/15/main): the entrypoint creates its own
# in $PGDATA on first start.
if [ -d /etc/postgresql/15/main ]; then pg_dropcluster 15 main; fi
chmod 0755 "$S/entrypoint.sh" "$S/healthcheck.sh"
ln -sf "$S/entrypoint.sh" /usr/local/bin/lightretriever-entrypoint
ln -sf "$S/healthcheck.sh" /usr/local/bin/lightretriever-healthcheck
mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql
chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
chmod 0700 /var/lib/postgresql/data
chmod 2775 /var/run/postgresql
chmod -R a+rX /opt/lightretriever
# What must be here (a build that lost a piece fails now, not at first start).
for f in /usr/lib/postgresql/15/lib/lightretriever.so /usr/share/postgresql/15/extension/lightretriever.control \
         /usr/lib/postgresql/15/lib/vector.so /usr/share/postgresql/15/extension/vector.control \
         /opt/lightretriever/models/all-minilm-l6-v2/model.safetensors /opt/lightretriever/models/all-minilm-l6-v2/tokenizer.json \
         /opt/lightretriever/models/splade-tiny/model.safetensors /opt/lightretriever/models/splade-tiny/tokenizer.json; do
  [ -e "$f" ] || { echo "image-setup: missing $f" >&2; exit 1; }
done
ldconfig -p | grep -q 'libdnnl\.so\.2 ' || { echo "image-setup: missing libdnnl.so.2 (libdnnl2)" >&2; exit 1; }
# ssl-cert's "snakeoil" key pair, generated when postgresql-common is installed: every container
# of this image would share that private key, and the server does not use it (initdb leaves
# ssl = off). `make-ssl-cert generate-default-snakeoil` makes a fresh pair if wanted.
rm -f /etc/ssl/private/ssl-cert-snakeoil.key /etc/ssl/certs/ssl-cert-snakeoil.pem
if [ -d /etc/ssl/certs ]; then find /etc/ssl/certs -xtype l -delete; fi
# Downloaded packages, package lists and caches.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
