#!/usr/bin/env bash
# Capture the real servers' failure messages into tests/golden/<family>-<version>/<case>.log.
#   tests/golden/capture.sh postgres 15|17    tests/golden/capture.sh mariadb 10.11|11.8
# Each case runs the offline image (make images; images.sh matrix for the trixie ones) on a host
# directory put in the failing state, host network, server bound to 127.0.0.1 on a free port.
# Run as root; it removes what it made.
set -euo pipefail
cd "$(dirname "$0")"
family=${1:?family}
version=${2:?version}
image=ownvol/$family:$version
out=$PWD/$family-$version
mkdir -p "$out"
work=$(mktemp -d /var/tmp/ownvol-golden.XXXXXX)
name=ovgolden-$$
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || :; umount "$work/ro" 2>/dev/null || :; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

if [ "$family" = postgres ]; then
    dst=/var/lib/postgresql/data
    env=(-e POSTGRES_PASSWORD=golden)
    server=(postgres -p "$port" -c listen_addresses=127.0.0.1)
    ready="database system is ready to accept connections"
else
    dst=/var/lib/mysql
    env=(-e MARIADB_ROOT_PASSWORD=golden)
    server=(mariadbd --port="$port" --bind-address=127.0.0.1)
    ready="port: $port "  # the Version line of the server itself (the initialising one says port: 0)
fi

run() { # run CASE DIR [docker run options...] -- the server's command, until it exits or 20 s
    local case=$1 dir=$2
    shift 2
    docker rm -f "$name" >/dev/null 2>&1 || :
    timeout 20 docker run --name "$name" --network host "${env[@]}" -v "$dir:$dst" "$@" >"$out/$case.log" 2>&1 || :
    docker rm -f "$name" >/dev/null 2>&1 || :
    echo "golden: $out/$case.log"
}

initialised() { # a data dir the image initialised, the server stopped cleanly
    local dir=$1
    mkdir -p "$dir"
    chown 999:999 "$dir"
    docker run -d --name "$name" --network host "${env[@]}" -v "$dir:$dst" "$image" "${server[@]}" >/dev/null
    for _ in $(seq 300); do docker logs "$name" 2>&1 | grep -q "$ready" && break; sleep 0.1; done
    if [ "$family" = mariadb ]; then  # a user table: its own InnoDB tablespace, golden/t.ibd
        docker exec "$name" mariadb -uroot -pgolden -e \
            'create database golden; create table golden.t(i int) engine=innodb; insert into golden.t values (1), (2)'
    fi
    docker stop -t 30 "$name" >/dev/null
    docker rm "$name" >/dev/null
}

up() { # up CASE DIR [docker run options...] -- a server that starts despite the fault: its log once it is ready
    local case=$1 dir=$2
    shift 2
    docker rm -f "$name" >/dev/null 2>&1 || :
    docker run -d --name "$name" --network host "${env[@]}" -v "$dir:$dst" "$@" >/dev/null
    for _ in $(seq 300); do docker logs "$name" 2>&1 | grep -q "$ready" && break; sleep 0.1; done
    docker logs "$name" >"$out/$case.log" 2>&1
    docker rm -f "$name" >/dev/null
    echo "golden: $out/$case.log"
}

# start-up: the server's user on a root-owned bind mount (an empty data dir)
mkdir -p "$work/rootowned"
run startup-root-owned "$work/rootowned" --user 999:999 "$image" "${server[@]}"

# start-up: an initialised data dir given to root between runs (the tree)
initialised "$work/chowned"
chown -R 0:0 "$work/chowned"
run startup-wrong-owner "$work/chowned" --user 999:999 "$image" "${server[@]}"

# start-up: an initialised data dir whose root alone was given to root, still readable by others
initialised "$work/rootonly"
chown 0:0 "$work/rootonly"
chmod 0755 "$work/rootonly"
run startup-root-only "$work/rootonly" --user 999:999 "$image" "${server[@]}"

if [ "$family" = mariadb ]; then
    # start-up: the data dir's root alone given to root, mode 0700: InnoDB's error 13, the server stays up
    initialised "$work/locked"
    chown 0:0 "$work/locked"
    chmod 0700 "$work/locked"
    run startup-root-locked "$work/locked" --user 999:999 "$image" "${server[@]}"

    # start-up: one tablespace given to root while the server was down (a table's file copied in as root):
    # InnoDB's "Operating system error number 13"; the server starts without the table
    initialised "$work/tablespace"
    chown 0:0 "$work/tablespace/golden/t.ibd"
    up startup-tablespace-root-owned "$work/tablespace" --user 999:999 "$image" "${server[@]}"

    # start-up: a data dir restored as root (mariabackup --copy-back run as root: every file root's, the
    # directory still the server's, no ddl_recovery.log): Aria's control file, then InnoDB's ibdata1
    initialised "$work/restored"
    chown -R 0:0 "$work/restored"
    chown 999:999 "$work/restored"
    rm -f "$work/restored/ddl_recovery.log"
    run startup-restored-as-root "$work/restored" --user 999:999 "$image" "${server[@]}"
fi

if [ "$family" = postgres ]; then
    # start-up: the server's own command (no entrypoint) on a data dir of mode 0777 (MariaDB has no such check)
    initialised "$work/mode"
    chmod 0777 "$work/mode"
    run startup-mode-0777 "$work/mode" --user 999:999 --entrypoint "${server[0]}" "$image" "${server[@]:1}"
fi

# start-up: an initialised data dir on a read-only filesystem
initialised "$work/ro"
mount --bind -o ro "$work/ro" "$work/ro"
run startup-read-only "$work/ro" --user 999:999 "$image" "${server[@]}"
umount "$work/ro"

if [ "$family" = postgres ]; then
    # start-up: postmaster.pid of another server that is alive (here a process of the same container)
    initialised "$work/pid"
    run startup-lock-file "$work/pid" --user 999:999 --entrypoint bash "$image" -c \
        "sleep 30 & printf '%s\n' \$! $dst 0 $port /var/run/postgresql 127.0.0.1 '    0 0' ready >$dst/postmaster.pid;
         exec postgres -p $port -c listen_addresses=127.0.0.1"
fi

# run time: the tree given to root under the running server, then a write
initialised "$work/live"
docker rm -f "$name" >/dev/null 2>&1 || :
docker run -d --name "$name" --network host "${env[@]}" -v "$work/live:$dst" --user 999:999 "$image" "${server[@]}" >/dev/null
for _ in $(seq 300); do docker logs "$name" 2>&1 | grep -q "$ready" && break; sleep 0.1; done
since=$(date +%s)
chown -R 0:0 "$work/live"
if [ "$family" = postgres ]; then
    docker exec "$name" psql -p "$port" -XAtc 'create table golden(i int); insert into golden select generate_series(1, 1000); checkpoint' || :
else
    docker exec "$name" mariadb --port="$port" -uroot -pgolden -e 'create database golden_runtime; insert into golden.t values (3); flush tables' || :
    # what a monitoring agent reads (mysqld_exporter --collect.info_schema.innodb_tablespaces): InnoDB stats
    # every tablespace file, and logs the files it cannot reach
    docker exec "$name" mariadb --port="$port" -uroot -pgolden -e \
        'select count(*) from information_schema.INNODB_SYS_TABLESPACES' || :
fi
sleep 3
docker logs --since "$since" "$name" >"$out/runtime-chowned.log" 2>&1
docker rm -f "$name" >/dev/null
echo "golden: $out/runtime-chowned.log"
