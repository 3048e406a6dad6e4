#!/usr/bin/env bash
# The dockerd binary of an engine version the tests run private engines on; prints its path.
#   scripts/dockerd.sh 20   bookworm's docker.io (20.10), the machine's own (`make engine` installs it)
#   scripts/dockerd.sh 26   trixie's docker.io (26.1), unpacked beside the machine's, never installed:
#                           it runs with bookworm's containerd and runc (glibc 2.34 is enough)
#   scripts/dockerd.sh 28   forky's docker.io (28.5.2; sid holds the same), unpacked the same way; it too runs with
#                           bookworm's containerd 1.6.20 and runc
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${OWNVOL_CACHE:-/var/cache/ownvol}

# unpack VERSION SUITE: that suite's docker.io under $CACHE/docker-VERSION, checked to be VERSION.x; prints dockerd's path
unpack() {
    local version=$1 suite=$2 dir=$CACHE/docker-$1 deb tmp
    if [ ! -x "$dir/usr/sbin/dockerd" ]; then
        deb=$(scripts/debs.sh "$suite" docker.io | tail -n 1)
        tmp=$(mktemp -d "$CACHE/docker-$version.XXXXXX")
        dpkg-deb -x "$deb" "$tmp"
        rm -rf "$dir" && mv "$tmp" "$dir"
    fi
    # A suite moves on (forky will get 29): say so rather than test another version under this one's name.
    if ! "$dir/usr/sbin/dockerd" --version | grep -q "version $version\."; then
        echo "dockerd.sh: $dir holds $("$dir/usr/sbin/dockerd" --version), not $version.x ($suite's docker.io moved on)" >&2
        exit 1
    fi
    echo "$dir/usr/sbin/dockerd"
}

case "${1:-}" in
20) command -v dockerd ;;
26) unpack 26 trixie ;;
28) unpack 28 forky ;;
*) echo "usage: dockerd.sh 20|26|28 (the engine versions the tests know)" >&2; exit 2 ;;
esac
