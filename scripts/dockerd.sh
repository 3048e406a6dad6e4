#!/usr/bin/env bash
# The dockerd binary of an engine version the tests run private engines on; prints its path.
#   scripts/dockerd.sh 20   bookworm's docker.io (20.10), the machine's own (`make engine` installs it)
#   scripts/dockerd.sh 26   trixie's docker.io (26.1), unpacked beside the machine's, never installed:
#                           it runs with bookworm's containerd and runc (glibc 2.34 is enough)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${OWNVOL_CACHE:-/var/cache/ownvol}

case "${1:-}" in
20) command -v dockerd ;;
26)
    dir=$CACHE/docker-26
    if [ ! -x "$dir/usr/sbin/dockerd" ]; then
        deb=$(scripts/debs.sh trixie docker.io | tail -n 1)
        tmp=$(mktemp -d "$CACHE/docker-26.XXXXXX")
        dpkg-deb -x "$deb" "$tmp"
        rm -rf "$dir" && mv "$tmp" "$dir"
    fi
    echo "$dir/usr/sbin/dockerd"
    ;;
*) echo "usage: dockerd.sh 20|26 (the engine versions the tests know)" >&2; exit 2 ;;
esac
