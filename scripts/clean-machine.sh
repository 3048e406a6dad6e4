#!/usr/bin/env bash
# Remove what this project put on this machine, so that the next `make up`/`make test` starts as on a new one:
#   - the engine's images of the project: every ownvol/* tag (make images, ownvol-image, hook-image, images.sh
#     base SUITE), the redis:ownvol-official-* tags tests make, and untagged images built on any of them
#     (the legacy builder's leftovers); containers the tests labelled (ownvol.test.session) go first
#   - the cache: $OWNVOL_CACHE (/var/cache/ownvol: debs, debootstrap, PyPI wheels, unpacked dockerd 26/28)
#   - this checkout's build outputs and its .venv (build/, run/, *.egg-info, .mypy_cache, .pytest_cache,
#     .hypothesis, __pycache__, ownvol/_entries.*.so), after stopping make up's driver and hook, which run from that venv
#   - what the tests leave behind: private engines' data and exec roots (/var/lib/ownvol-test, /run/ovt-*),
#     scratch directories (/var/tmp/ownvol-*, /var/tmp/ovsd-*, /tmp/ovproxy-*, /tmp/ovrl*, /tmp/pytest-of-root), their
#     locks; a rootless engine's test user (ovrl<N>x<M>) and its subordinate ids;
#     make up's logs and pid files (/var/log/ownvol, /run/ownvol)
# It keeps apt packages, the engine, the managed plugin (make plugin), a host install (make uninstall removes it)
# and every volume with its data (/var/lib/ownvol). A directory a live process still uses (a private dockerd of a
# running test) is left, with the reason. Safe to run twice; DRY_RUN=1 only says what it would remove.
set -euo pipefail
cd "$(dirname "$0")/.."
TREE=$PWD
CACHE=${OWNVOL_CACHE:-/var/cache/ownvol}
DRY=${DRY_RUN:-}
removed=0 kept=0

say() { echo "clean-machine: $*"; }
# act WHAT COMMAND...: run COMMAND (or, under DRY_RUN, only say it would); its output is shown only if it fails
act() {
    local what=$1 out
    shift
    if [ -n "$DRY" ]; then
        say "would remove $what"
    elif out=$("$@" 2>&1); then
        say "removed $what"
    else
        say "could not remove $what: $out" >&2
        kept=$((kept + 1))
        return 0
    fi
    removed=$((removed + 1))
}
keep() { say "kept $1"; kept=$((kept + 1)); }

# Every live process but this script as "PID CWD CMDLINE ENVIRONMENT", read once (a test's driver is given its
# root in its environment, OWNVOL_ROOT=/var/tmp/ownvol-plugin-...: a chaos run's lost its data to a clean-machine
# that read command lines only).
PROCS=$(for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    env=$(tr '\0' ' ' 2>/dev/null <"$p/environ") || env=""
    echo "${p#/proc/} $(readlink "$p/cwd" 2>/dev/null) $cmd $env"
done)

# The pids of live processes whose working directory, command line or environment names DIR or a path below it.
users_of() {
    local dir=${1%/}
    awk -v d="$dir" '{for (i = 2; i <= NF; i++) if ($i == d || index($i, d "/") == 1 || index($i, "=" d) > 0) {print $1; break}}' \
        <<<"$PROCS"
}

# Mount points at or below DIR, deepest first (a killed dockerd leaves overlay and nsfs mounts behind).
mounts_below() {
    local dir=${1%/}
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | awk '{print length, $0}' \
        | sort -rn | cut -d' ' -f2-
}

remove_tree() {  # remove_tree DIR: unmount what is left below it, then remove it, unless a live process uses it
    local dir=$1 pids point
    [ -e "$dir" ] || [ -L "$dir" ] || return 0
    # A private engine's NAME.log and NAME.plugins (its /run/docker/plugins) go with NAME, its data root.
    pids=$( (users_of "$dir"; if [[ $dir =~ \.(log|plugins)$ ]]; then users_of "${dir%.*}"; fi) | sort -u | paste -sd ' ')
    if [ -n "$pids" ]; then
        keep "$dir: in use by pid $pids (a test still running?)"
        return 0
    fi
    if [ -z "$DRY" ]; then
        while read -r point; do
            if [ -n "$point" ]; then umount -l "$point" 2>/dev/null || true; fi
        done < <(mounts_below "$dir")
    fi
    act "$dir" rm -rf --one-file-system -- "$dir"
}

engine_up() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

clean_engine() {
    local ids ref id parent ours=() dangling
    if ! engine_up; then
        keep "the engine's images: no engine answers (start it and run this again to remove them)"
        return 0
    fi
    # Tests' containers (each test removes its own; a killed run leaves them): they hold images and volumes.
    for id in $(docker ps -aq --filter label=ownvol.test.session); do
        act "container $(docker inspect --format '{{.Name}}' "$id" | tr -d /) (a test's)" docker rm -f "$id"
    done
    # The project's images and everything below them (legacy builds leave their steps as untagged parents).
    mapfile -t ids < <(docker images -q --no-trunc 'ownvol/*' | sort -u)
    for id in "${ids[@]}"; do
        while [ -n "$id" ]; do
            ours+=("$id")
            id=$(docker image inspect --format '{{.Parent}}' "$id" 2>/dev/null || true)
        done
    done
    # Untagged images built on one of those (a tag rebuilt leaves its former image untagged).
    for id in $(docker images -q --no-trunc --filter dangling=true); do
        parent=$id
        while [ -n "$parent" ]; do
            if [[ " ${ours[*]-} " == *" $parent "* ]] && [ "$parent" != "$id" ]; then
                dangling+=" $id"
                break
            fi
            parent=$(docker image inspect --format '{{.Parent}}' "$parent" 2>/dev/null || true)
        done
    done
    for ref in $(docker images --format '{{.Repository}}:{{.Tag}}' 'ownvol/*') \
        $(docker images --format '{{.Repository}}:{{.Tag}}' 'redis' | grep '^redis:ownvol-official-' || true); do
        act "image $ref" docker rmi "$ref"  # not forced: the engine keeps an image a container still uses
    done
    for id in ${dangling-}; do
        docker image inspect "$id" >/dev/null 2>&1 || continue  # went with a tag above
        act "untagged image ${id#sha256:} (built on an ownvol image)" docker rmi "$id"
    done
}

stop_daemons() {  # make up's driver and hook run from .venv: stopped before it goes
    local name
    for name in hook driver plugin; do  # plugin: a driver started by make up before it was named driver
        if scripts/daemon.sh status "$name" >/dev/null 2>&1; then
            if [ -n "$DRY" ]; then
                say "would stop make up's $name (it runs from $TREE/.venv)"
            else
                scripts/daemon.sh stop "$name"
            fi
        fi
    done
}

clean_tree() {
    local path
    for path in .venv build run .mypy_cache .pytest_cache .hypothesis bench/results.json.tmp; do
        remove_tree "$TREE/$path"
    done
    for path in "$TREE"/ownvol/_entries.*.so; do  # the compiled walk loop, built in place by the venv's install
        remove_tree "$path"
    done
    while IFS= read -r -d '' path; do
        remove_tree "$path"
    done < <(find "$TREE" \( -name .git -o -name .venv \) -prune -o \( -name '*.egg-info' -o -name __pycache__ \) \
        -type d -print0)
}

# remove_each DIR: each entry of DIR on its own (a running test keeps only what it uses), then DIR once empty
remove_each() {
    local dir=$1 entry
    [ -d "$dir" ] || return 0
    while IFS= read -r -d '' entry; do
        remove_tree "$entry"
    done < <(find "$dir" -mindepth 1 -maxdepth 1 -print0)
    if [ -z "$DRY" ] && [ -z "$(ls -A "$dir")" ]; then
        act "$dir (empty now)" rmdir "$dir"
    fi
}

clean_tests() {
    local path
    remove_each /var/lib/ownvol-test
    remove_each /tmp/pytest-of-root
    shopt -s nullglob
    for path in /run/ovt-* /var/tmp/ownvol-* /var/tmp/ovsd-* /tmp/ovproxy-* /tmp/ovrl* /var/lock/ownvol-test-image-*.lock \
        "${OWNVOL_LOGS:-/var/log/ownvol}" "${OWNVOL_RUN:-/run/ownvol}"; do
        remove_tree "$path"
    done
    shopt -u nullglob
}

# The user a rootless engine's test adds (tests/support/rootless.py, ovrl<N>x<M>) when the test was killed before
# its teardown: the user, its group, and its own lines in /etc/subuid and /etc/subgid, once none of its processes runs.
clean_rootless_users() {
    local user users
    users=$(awk -F: '$1 ~ /^ovrl[0-9]+x[0-9]+$/ {print $1}' /etc/passwd)
    while read -r user; do
        [ -n "$user" ] || continue
        if pgrep -u "$user" >/dev/null 2>&1; then
            keep "user $user (its processes run)"
        else
            act "user $user and its subordinate ids" sh -c "userdel $user && sed -i '/^$user:/d' /etc/subuid /etc/subgid"
        fi
    done <<<"$users"
}

[ "$(id -u)" = 0 ] || { echo "clean-machine: needs root (the images, /var/cache, the tests' state)" >&2; exit 1; }
[ -n "$DRY" ] && say "DRY_RUN: nothing is removed"
stop_daemons
clean_engine
remove_each "$CACHE"
clean_tree
clean_tests
clean_rootless_users
if [ -n "$DRY" ]; then
    say "would remove $removed; keeps apt packages, the engine, the managed plugin, a host install and every volume"
elif [ "$removed" -eq 0 ]; then
    say "nothing to remove$([ "$kept" -eq 0 ] || echo " ($kept kept, above)")"
else
    say "removed $removed; kept apt packages, the engine, the managed plugin, a host install and every volume"
fi
