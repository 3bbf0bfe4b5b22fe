#!/bin/sh
# The image's entrypoint: runs the command as the owner of the directory that holds $WWWSERVE_HOME.
#
# docker-compose.yml bind-mounts the project directory at /project and sets WWWSERVE_HOME=/project/.wwwserve,
# so everything a container writes there (deployment record, wallets, identities, indexes, logs) belongs to
# whoever owns the checkout, not to root, with a plain `docker compose up` (no UID variables to export).
# $WWWSERVE_HOME itself may not exist yet: the nearest existing directory above it decides. Where that is
# root's (no bind mount, rootless Docker, a volume), the command runs as root, as before.
set -eu
if [ "$(id -u)" = 0 ] && [ -n "${WWWSERVE_HOME:-}" ]; then
  dir=$WWWSERVE_HOME
  while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
  uid=$(stat -c %u "$dir")
  gid=$(stat -c %g "$dir")
  if [ "$uid" != 0 ]; then
    # That user has no home in the image: give it a private one (caches of transformers, pip, ...).
    export HOME=/tmp/home-$uid
    mkdir -p "$HOME"
    chown "$uid:$gid" "$HOME"
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
  fi
fi
exec "$@"
