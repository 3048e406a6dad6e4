#!/usr/bin/env bash
# The managed (v2) plugin, built the way reference plugins are: a container's filesystem exported
# into DIR/rootfs, config.json beside it, `docker plugin create`, `docker plugin enable`.
#
#   plugin.sh rootfs DIR      DIR/rootfs from $OWNVOL_IMAGE and DIR/config.json from ./config.json
#   plugin.sh install [NAME]  (make plugin) build into $PLUGIN_DIR, replace the legacy driver (NAME ownvol)
#                             and any managed NAME (keeping its settings), create, enable
#   plugin.sh retire [NAME]   (make up) remove a managed NAME so that the legacy driver answers to it
#   plugin.sh set FILE [NAME] (make plugin-set) apply a settings file (`docker plugin set` arguments, KEY=VALUE
#                             one a line, # comments) to NAME on each engine of $NODES (DOCKER_HOST values,
#                             space-separated; default the current one): disable, set, enable, check
#
# OWNVOL_DATA sets the host directory of the data mount (data.source) at install; FORCE=1 replaces
# a plugin whose volumes running containers still use. DOCKER_HOST is respected.
set -euo pipefail
cd "$(dirname "$0")/.."

OWNVOL_IMAGE=${OWNVOL_IMAGE:-ownvol/ownvol:latest}
PLUGIN_DIR=${PLUGIN_DIR:-build/plugin}
LEGACY_ROOT=${OWNVOL_ROOT:-/var/lib/ownvol}

say() { echo "plugin: $*"; }
exists() { docker plugin inspect "$1" >/dev/null 2>&1; }
field() { docker plugin inspect --format "$2" "$1"; }

build_rootfs() (
    dir=$1
    docker image inspect "$OWNVOL_IMAGE" >/dev/null 2>&1 \
        || { echo "plugin: $OWNVOL_IMAGE is missing; run 'make ownvol-image'" >&2; exit 1; }
    cid=$(docker create "$OWNVOL_IMAGE" true)
    trap 'docker rm -f "$cid" >/dev/null' EXIT
    rm -rf "$dir/rootfs"
    mkdir -p "$dir/rootfs"
    docker export "$cid" | tar -x -C "$dir/rootfs"
    cp config.json "$dir/config.json"
    say "rootfs of $OWNVOL_IMAGE in $dir"
)

# What to carry over to a replacement, as `docker plugin set` arguments: every mount source (where the
# data is; dockerd overwrites the configured default when one is set) and the env values the user changed.
user_settings() {
    local name=$1
    field "$name" '{{range .Settings.Mounts}}{{.Name}}.source={{.Source}}{{"\n"}}{{end}}' | grep -v '^$' || true
    comm -13 <(field "$name" '{{range .Config.Env}}{{.Name}}={{.Value}}{{"\n"}}{{end}}' | sort) \
        <(field "$name" '{{range .Settings.Env}}{{.}}{{"\n"}}{{end}}' | sort) | grep -v '^$' || true
}

# Volumes of this driver that a running container has mounted (volumes name a managed driver NAME:TAG).
volumes_in_use() {
    local name=$1 v
    for v in $(docker volume ls -q --filter "driver=$(field "$name" '{{.Name}}')"); do
        [ -n "$(docker ps -q --filter "volume=$v")" ] && echo "$v"
    done
    return 0
}

remove_managed() {
    local name=$1
    docker plugin disable -f "$name" >/dev/null 2>&1 || true
    docker plugin rm -f "$name" >/dev/null
}

# dockerd keeps a legacy (socket-file) driver it has used until it restarts, also when a managed plugin of
# the same name appears: a probe volume shows which one answers (a managed plugin's volumes say NAME:TAG).
check_routing() {
    local name=$1 probe="ownvol-probe-$$" out driver=""
    if out=$(docker volume create --driver "$name" "$probe" 2>&1); then
        driver=$(docker volume inspect --format '{{.Driver}}' "$probe")
        docker volume rm "$probe" >/dev/null 2>&1 || true
    fi
    case "$driver" in "$name":*) return 0 ;; esac
    if [ -n "$driver" ] || [[ "$out" == *"/run/docker/plugins/$name.sock"* ]]; then
        echo "plugin: dockerd still sends '$name' to the legacy driver it used before (it keeps one until it" >&2
        echo "plugin: restarts); restart dockerd (systemctl restart docker) and the managed plugin answers" >&2
    else
        echo "plugin: $name is enabled but a probe volume failed: $out" >&2
    fi
    return 1
}

install() {
    local name=${1:-ownvol} settings=() source in_use drop
    if exists "$name"; then
        in_use=$(volumes_in_use "$name" | paste -sd ' ')
        if [ -n "$in_use" ] && [ -z "${FORCE:-}" ]; then
            echo "plugin: running containers use $name volumes ($in_use); stop them or set FORCE=1" >&2
            return 1
        fi
    fi
    build_rootfs "$PLUGIN_DIR"
    if [ "$name" = ownvol ]; then
        scripts/daemon.sh stop driver
        scripts/daemon.sh stop plugin  # make up's driver from before it was named driver
    fi
    if exists "$name"; then
        drop='^$'
        [ -z "${OWNVOL_DATA:-}" ] || drop='^data\.source='  # OWNVOL_DATA replaces the old data.source
        mapfile -t settings < <(user_settings "$name" | grep -v "$drop" || true)
        say "replacing $name${settings[*]:+, keeping ${settings[*]}}"
        remove_managed "$name"
    fi
    [ -n "${OWNVOL_DATA:-}" ] && settings+=("data.source=$OWNVOL_DATA")
    docker plugin create "$name" "$PLUGIN_DIR" >/dev/null
    [ ${#settings[@]} -eq 0 ] || docker plugin set "$name" "${settings[@]}"
    field "$name" '{{range .Settings.Mounts}}{{.Source}}{{"\n"}}{{end}}' | while read -r source; do
        [ -z "$source" ] || mkdir -p "$source"
    done
    docker plugin enable "$name" >/dev/null
    check_routing "$name"
    say "$name enabled; data in $(field "$name" '{{range .Settings.Mounts}}{{if eq .Name "data"}}{{.Source}}{{end}}{{end}}')"
}

retire() {
    local name=${1:-ownvol} settings data volumes
    exists "$name" || return 0
    settings=$(user_settings "$name" | paste -sd ' ')
    data=$(field "$name" '{{range .Settings.Mounts}}{{if eq .Name "data"}}{{.Source}}{{end}}{{end}}')
    volumes=$(docker volume ls -q --filter "driver=$(field "$name" '{{.Name}}')" | paste -sd ' ')
    # A managed plugin, even disabled, hides a legacy one of the same name from dockerd: remove it.
    remove_managed "$name"
    say "removed the managed $name so the legacy driver answers${settings:+ (its settings were: $settings)}"
    if [ "$data" != "$LEGACY_ROOT" ]; then
        say "note: its data lives in $data; the legacy driver uses $LEGACY_ROOT (OWNVOL_ROOT)"
    fi
    if [ -n "$volumes" ]; then
        say "note: dockerd mounts a volume only under the driver that created it: $volumes stay in $data for the managed $name ('make plugin' brings it back)"
    fi
}

# The settings of a file, one `docker plugin set` argument a line; blank lines and # comments skipped.
settings_of() {
    local file=$1 line n=0
    [ -r "$file" ] || { echo "plugin: cannot read settings file $file" >&2; return 1; }
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=${line%%#*}
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line%"${line##*[![:space:]]}"}"
        [ -z "$line" ] && continue
        if [[ ! "$line" =~ ^[A-Za-z_][A-Za-z0-9_.]*=.*$ ]]; then
            echo "plugin: $file line $n: '$line' is not KEY=VALUE (an env name, or MOUNT.source)" >&2
            return 1
        fi
        echo "$line"
    done <"$file"
}

# Volume plugins and their settings are per node: the same file on every node of a swarm.
set_everywhere() {
    local file=$1 name=${2:-ownvol} settings=() node in_use failed=0 lines
    lines=$(settings_of "$file") || return 1
    [ -z "$lines" ] || mapfile -t settings <<<"$lines"
    [ ${#settings[@]} -gt 0 ] || { echo "plugin: no settings in $file" >&2; return 1; }
    for node in ${NODES:-${DOCKER_HOST:-unix:///var/run/docker.sock}}; do
        export DOCKER_HOST=$node
        if ! exists "$name"; then
            echo "plugin: $node: no plugin $name (docker plugin install --alias $name ...)" >&2
            failed=1
            continue
        fi
        in_use=$(volumes_in_use "$name" | paste -sd ' ')
        if [ -n "$in_use" ] && [ -z "${FORCE:-}" ]; then
            echo "plugin: $node: running containers use $name volumes ($in_use); stop them or set FORCE=1" >&2
            failed=1
            continue
        fi
        docker plugin disable -f "$name" >/dev/null 2>&1 || true
        if ! docker plugin set "$name" "${settings[@]}"; then
            failed=1
        fi
        docker plugin enable "$name" >/dev/null || failed=1
        say "$node: $name ${settings[*]}"
    done
    return $failed
}

case "${1:-}" in
set) set_everywhere "${2:?usage: plugin.sh set FILE [NAME]}" "${3:-ownvol}" ;;
rootfs) build_rootfs "${2:?usage: plugin.sh rootfs DIR}" ;;
install) install "${2:-ownvol}" ;;
retire) retire "${2:-ownvol}" ;;
*) echo "usage: plugin.sh rootfs DIR | install [NAME] | retire [NAME] | set FILE [NAME]" >&2; exit 2 ;;
esac
