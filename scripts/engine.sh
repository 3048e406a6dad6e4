#!/usr/bin/env bash
# Make sure a Docker engine answers. Use the one that does (DOCKER_HOST is respected);
# otherwise install Debian's docker.io and start dockerd with no bridge and no iptables.
set -euo pipefail

LOG=${OWNVOL_DOCKERD_LOG:-/var/log/ownvol-dockerd.log}

answers() { timeout 20 docker info >/dev/null 2>&1; }

# The engine found, and whether ownvol is tested on its version (README, Supported engines).
TESTED="20.10 26.1 28.5"
found() {
    local version api major_minor
    version=$(docker version --format '{{.Server.Version}}')
    api=$(docker version --format '{{.Server.APIVersion}}')
    major_minor=$(echo "$version" | cut -d. -f1,2)
    if [[ " $TESTED " == *" $major_minor "* ]]; then
        echo "engine: Docker $version (API $api) at ${DOCKER_HOST:-unix:///var/run/docker.sock}: tested (20.10, 26.1, 28.5)"
    elif [ "$(printf '%s\n' "$major_minor" 20.10 | sort -V | head -n 1)" = 20.10 ] \
        && [ "$(printf '%s\n' "$major_minor" 28.5 | sort -V | tail -n 1)" = 28.5 ]; then
        echo "engine: Docker $version (API $api): within the supported range 20.10 to 28.5, between the tested versions"
    else
        echo "engine: Docker $version (API $api): outside the tested range 20.10 to 28.5 (README, Supported engines)" >&2
    fi
}

if command -v docker >/dev/null 2>&1 && answers; then
    found
    exit 0
fi
if [ -n "${DOCKER_HOST:-}" ]; then
    echo "engine: DOCKER_HOST=$DOCKER_HOST is set but does not answer; unset it to let 'make engine' start a local dockerd" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "engine: no Docker engine answers and starting one needs root" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    echo "engine: installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

# A dockerd that died leaves its pid file behind, and a live one that does not answer must not be doubled.
if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    echo "engine: dockerd (pid $(cat /var/run/docker.pid)) runs but does not answer yet; waiting"
else
    echo "engine: starting dockerd --bridge=none --iptables=false (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false >>"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
    if answers; then
        if ip link show docker0 >/dev/null 2>&1; then
            echo "engine: a docker0 bridge exists; ownvol's tests need an engine without one" >&2
            exit 1
        fi
        found
        exit 0
    fi
    sleep 1
done
echo "engine: dockerd did not answer within 60 s; the end of $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
