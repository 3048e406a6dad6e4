#!/usr/bin/env bash
# Capture the real servers' failure messages into tests/golden/<family>-<version>/<case>.log.
#   tests/golden/capture.sh postgres 15|17 [CASE...]    tests/golden/capture.sh mariadb 10.11|11.8 [CASE...]
# (every case, or only those named: e.g. `capture.sh mariadb 11.8 startup-binlog-dir-root-owned`)
# Each case runs the offline image (make images; images.sh matrix for the trixie ones) on a host
# directory put in the failing state, host network, server bound to 127.0.0.1 on a free port.
# Run as root; it removes what it made.
set -euo pipefail
cd "$(dirname "$0")"
family=${1:?family}
version=${2:?version}
only=" ${*:3} "
want() { [ "$only" = "  " ] || [[ $only == *" $1 "* ]]; }
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

initialised() { # initialised DIR [docker run options...] -- a data dir the image initialised, the server stopped
    local dir=$1
    shift
    mkdir -p "$dir"
    chown 999:999 "$dir"
    docker run -d --name "$name" --network host "${env[@]}" -v "$dir:$dst" "$@" "$image" "${server[@]}" >/dev/null
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
if want startup-root-owned; then
    mkdir -p "$work/rootowned"
    run startup-root-owned "$work/rootowned" --user 999:999 "$image" "${server[@]}"
fi

# start-up: an initialised data dir given to root between runs (the tree)
if want startup-wrong-owner; then
    initialised "$work/chowned"
    chown -R 0:0 "$work/chowned"
    run startup-wrong-owner "$work/chowned" --user 999:999 "$image" "${server[@]}"
fi

# start-up: an initialised data dir whose root alone was given to root, still readable by others
if want startup-root-only; then
    initialised "$work/rootonly"
    chown 0:0 "$work/rootonly"
    chmod 0755 "$work/rootonly"
    run startup-root-only "$work/rootonly" --user 999:999 "$image" "${server[@]}"
fi

if [ "$family" = mariadb ]; then
    # start-up: the data dir's root alone given to root, mode 0700: InnoDB's error 13, the server stays up
    if want startup-root-locked; then
        initialised "$work/locked"
        chown 0:0 "$work/locked"
        chmod 0700 "$work/locked"
        run startup-root-locked "$work/locked" --user 999:999 "$image" "${server[@]}"
    fi

    # start-up: one tablespace given to root while the server was down (a table's file copied in as root):
    # InnoDB's "Operating system error number 13"; the server starts without the table
    if want startup-tablespace-root-owned; then
        initialised "$work/tablespace"
        chown 0:0 "$work/tablespace/golden/t.ibd"
        up startup-tablespace-root-owned "$work/tablespace" --user 999:999 "$image" "${server[@]}"
    fi

    # start-up: a data dir restored as root (mariabackup --copy-back run as root: every file root's, the
    # directory still the server's, no ddl_recovery.log): Aria's control file, then InnoDB's ibdata1
    if want startup-restored-as-root; then
        initialised "$work/restored"
        chown -R 0:0 "$work/restored"
        chown 999:999 "$work/restored"
        rm -f "$work/restored/ddl_recovery.log"
        run startup-restored-as-root "$work/restored" --user 999:999 "$image" "${server[@]}"
    fi

    # Paths beside the data dir (issue 24 kind A), each on its own bind that Docker created (root 0755), the
    # data dir an initialised one of the server's:
    # start-up: the binary log (--log-bin) in /var/log/mysql (case 20): its index cannot be created
    if want startup-binlog-dir-root-owned; then
        initialised "$work/binlog"
        mkdir -p "$work/binlog-logs"
        run startup-binlog-dir-root-owned "$work/binlog" -v "$work/binlog-logs:/var/log/mysql" --user 999:999 \
            "$image" "${server[@]}" --log-bin=/var/log/mysql/mariadb-bin --server-id=1
    fi

    # start-up: the error log (--log-error) in /var/log/mysql: the server says so and runs, logging to stderr
    if want startup-error-log-root-owned; then
        initialised "$work/errlog"
        mkdir -p "$work/errlog-logs"
        up startup-error-log-root-owned "$work/errlog" -v "$work/errlog-logs:/var/log/mysql" --user 999:999 \
            "$image" "${server[@]}" --log-error=/var/log/mysql/error.log
    fi

    # start-up: tmpdir on its own bind: InnoDB cannot create its temporary files and the server aborts
    if want startup-tmpdir-root-owned; then
        initialised "$work/tmpdir"
        mkdir -p "$work/tmpdir-tmp"
        run startup-tmpdir-root-owned "$work/tmpdir" -v "$work/tmpdir-tmp:/var/tmp/mariadb" --user 999:999 \
            "$image" "${server[@]}" --tmpdir=/var/tmp/mariadb
    fi

    # start-up: the unix socket's directory (/run/mysqld, the image's --socket) on its own bind
    if want startup-socket-dir-root-owned; then
        initialised "$work/socket"
        mkdir -p "$work/socket-run"
        run startup-socket-dir-root-owned "$work/socket" -v "$work/socket-run:/run/mysqld" --user 999:999 \
            "$image" "${server[@]}"
    fi

    # start-up: InnoDB's redo log (innodb-log-group-home-dir) on its own bind, given to root between runs:
    # "Operating system error number 13", no file named
    if want startup-redo-dir-root-owned; then
        initialised "$work/redo"
        mkdir -p "$work/redo-log"
        mv "$work/redo/ib_logfile0" "$work/redo-log/"
        chown -R 0:0 "$work/redo-log"
        run startup-redo-dir-root-owned "$work/redo" -v "$work/redo-log:/var/lib/mysql-redo" --user 999:999 \
            "$image" "${server[@]}" --innodb-log-group-home-dir=/var/lib/mysql-redo
    fi

    # start-up: the undo tablespaces (innodb-undo-directory; 11.x makes three by default, 10.11 none) on their
    # own bind, given to root: "Failed to open the undo tablespace", said of a missing file too (no errno)
    if want startup-undo-dir-root-owned; then
        initialised "$work/undo"
        if compgen -G "$work/undo/undo0*" >/dev/null; then
            mkdir -p "$work/undo-dir"
            mv "$work"/undo/undo0* "$work/undo-dir/"
            chown -R 0:0 "$work/undo-dir"
            run startup-undo-dir-root-owned "$work/undo" -v "$work/undo-dir:/var/lib/mysql-undo" --user 999:999 \
                "$image" "${server[@]}" --innodb-undo-directory=/var/lib/mysql-undo
        fi
    fi

    # run time: a replica's relay log (--relay-log) in /var/log/mysql: CHANGE MASTER TO opens it
    if want runtime-relay-log-root-owned; then
        initialised "$work/relay"
        mkdir -p "$work/relay-logs"
        docker rm -f "$name" >/dev/null 2>&1 || :
        docker run -d --name "$name" --network host "${env[@]}" -v "$work/relay:$dst" \
            -v "$work/relay-logs:/var/log/mysql" --user 999:999 "$image" "${server[@]}" \
            --relay-log=/var/log/mysql/relay-bin --server-id=2 >/dev/null
        for _ in $(seq 300); do docker logs "$name" 2>&1 | grep -q "$ready" && break; sleep 0.1; done
        docker exec "$name" mariadb --port="$port" -uroot -pgolden -e \
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1, MASTER_USER='replica'" || :
        sleep 1
        docker logs "$name" >"$out/runtime-relay-log-root-owned.log" 2>&1
        docker rm -f "$name" >/dev/null
        echo "golden: $out/runtime-relay-log-root-owned.log"
    fi
fi

if [ "$family" = postgres ]; then
    # start-up: the server's own command (no entrypoint) on a data dir of mode 0777 (MariaDB has no such check)
    if want startup-mode-0777; then
        initialised "$work/mode"
        chmod 0777 "$work/mode"
        run startup-mode-0777 "$work/mode" --user 999:999 --entrypoint "${server[0]}" "$image" "${server[@]:1}"
    fi

    # Paths beside the data dir (issue 24 kind A), each on its own bind:
    # start-up: initdb --waldir on a root-owned bind (Docker created it): initdb cannot chmod it
    if want startup-waldir-root-owned; then
        mkdir -p "$work/waldir" "$work/waldir-wal"
        chown 999:999 "$work/waldir"
        run startup-waldir-root-owned "$work/waldir" -v "$work/waldir-wal:/var/lib/postgresql/wal" \
            -e POSTGRES_INITDB_ARGS=--waldir=/var/lib/postgresql/wal --user 999:999 "$image" "${server[@]}"
    fi

    # start-up: pg_wal a link to its own bind (initdb --waldir), that bind's tree given to root between runs
    if want startup-wal-chowned; then
        mkdir -p "$work/wal-wal"
        chown 999:999 "$work/wal-wal"
        initialised "$work/wal" -v "$work/wal-wal:/var/lib/postgresql/wal" \
            -e POSTGRES_INITDB_ARGS=--waldir=/var/lib/postgresql/wal --user 999:999
        chown -R 0:0 "$work/wal-wal"
        run startup-wal-chowned "$work/wal" -v "$work/wal-wal:/var/lib/postgresql/wal" --user 999:999 \
            "$image" "${server[@]}"
    fi

    # start-up: the unix socket's directory (/var/run/postgresql) on its own root-owned bind
    if want startup-socket-dir-root-owned; then
        initialised "$work/socket"
        mkdir -p "$work/socket-run"
        run startup-socket-dir-root-owned "$work/socket" -v "$work/socket-run:/var/run/postgresql" \
            --user 999:999 "$image" "${server[@]}"
    fi

    # start-up: the logging collector's log_directory on its own root-owned bind
    if want startup-log-dir-root-owned; then
        initialised "$work/logdir"
        mkdir -p "$work/logdir-logs"
        run startup-log-dir-root-owned "$work/logdir" -v "$work/logdir-logs:/var/log/postgresql" --user 999:999 \
            "$image" "${server[@]}" -c logging_collector=on -c log_directory=/var/log/postgresql
    fi

    # run time: CREATE TABLESPACE on a root-owned bind; then a tablespace of the server's given to root
    # under it (pg_tblspc/OID is a link to its location), and its table written and read
    if want runtime-tablespace-root-owned; then
        initialised "$work/tblspc"
        mkdir -p "$work/tblspc-new" "$work/tblspc-kept"
        chown 999:999 "$work/tblspc-kept"
        docker rm -f "$name" >/dev/null 2>&1 || :
        docker run -d --name "$name" --network host "${env[@]}" -v "$work/tblspc:$dst" \
            -v "$work/tblspc-new:/srv/tblspc-new" -v "$work/tblspc-kept:/srv/tblspc-kept" --user 999:999 \
            "$image" "${server[@]}" >/dev/null
        for _ in $(seq 300); do docker logs "$name" 2>&1 | grep -q "$ready" && break; sleep 0.1; done
        pg=(docker exec "$name" psql -p "$port" -Xq)
        "${pg[@]}" -c "create tablespace fresh location '/srv/tblspc-new'" || :
        "${pg[@]}" -c "create tablespace kept location '/srv/tblspc-kept'"
        "${pg[@]}" -c "create table kept(i int) tablespace kept" -c "insert into kept values (1)" -c checkpoint
        chown -R 0:0 "$work/tblspc-kept"
        "${pg[@]}" -c "insert into kept values (2)" || :
        "${pg[@]}" -c "select count(*) from kept" || :
        sleep 1
        docker logs "$name" >"$out/runtime-tablespace-root-owned.log" 2>&1
        docker rm -f "$name" >/dev/null
        echo "golden: $out/runtime-tablespace-root-owned.log"
    fi
fi

# start-up: an initialised data dir on a read-only filesystem
if want startup-read-only; then
    initialised "$work/ro"
    mount --bind -o ro "$work/ro" "$work/ro"
    run startup-read-only "$work/ro" --user 999:999 "$image" "${server[@]}"
    umount "$work/ro"
fi

if [ "$family" = postgres ] && want startup-lock-file; then
    # start-up: postmaster.pid of another server that is alive (here a process of the same container)
    initialised "$work/pid"
    run startup-lock-file "$work/pid" --user 999:999 --entrypoint bash "$image" -c \
        "sleep 30 & printf '%s\n' \$! $dst 0 $port /var/run/postgresql 127.0.0.1 '    0 0' ready >$dst/postmaster.pid;
         exec postgres -p $port -c listen_addresses=127.0.0.1"
fi

# run time: the tree given to root under the running server, then a write
if want runtime-chowned; then
    initialised "$work/live"
    docker rm -f "$name" >/dev/null 2>&1 || :
    docker run -d --name "$name" --network host "${env[@]}" -v "$work/live:$dst" --user 999:999 "$image" \
        "${server[@]}" >/dev/null
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
fi
