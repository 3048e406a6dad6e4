#!/bin/bash
# The official image's docker-entrypoint.sh (MariaDB/mariadb-docker), reduced to its start-up path:
#   the data dir is the server's own (mariadbd --verbose --help with the same arguments);
#   as root: give what in it is not mysql's to mysql, and drop to mysql (setpriv);
#   as mysql: initialise an empty data dir (mariadb-install-db; a temporary server without network sets
#   root's password from MARIADB_ROOT_PASSWORD or its _FILE, or leaves it empty with
#   MARIADB_ALLOW_EMPTY_ROOT_PASSWORD), then exec the server.
set -Eeuo pipefail

if [ "${1:0:1}" = - ]; then
    set -- mariadbd "$@"
fi
case "$1" in
    mariadbd | mysqld) ;;
    *) exec "$@" ;;
esac

datadir=$("$@" --verbose --help 2>/dev/null | awk '$1 == "datadir" { print $2; exit }')
datadir=${datadir%/}
datadir=${datadir:-/var/lib/mysql}

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$datadir"
    find "$datadir" \! -user mysql -exec chown mysql:mysql '{}' +
    exec setpriv --reuid=mysql --regid=mysql --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -d "$datadir/mysql" ]; then
    if [ -n "${MARIADB_ROOT_PASSWORD_FILE:-}" ]; then
        MARIADB_ROOT_PASSWORD=$(<"$MARIADB_ROOT_PASSWORD_FILE")
    fi
    if [ -z "${MARIADB_ROOT_PASSWORD:-}" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ]; then
        echo "entrypoint: the data dir is empty: set MARIADB_ROOT_PASSWORD (or _FILE) or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" >&2
        exit 1
    fi
    mkdir -p "$datadir"
    mariadb-install-db --datadir="$datadir" --rpm --auth-root-authentication-method=normal --skip-test-db \
        --skip-name-resolve >/dev/null
    socket=/run/mysqld/init.sock
    "$@" --skip-networking --socket="$socket" --wsrep_on=OFF &
    pid=$!
    for _ in $(seq 300); do
        mariadb-admin --socket="$socket" -uroot --silent ping >/dev/null 2>&1 && break  # root: no password yet
        kill -0 "$pid" 2>/dev/null || { echo "entrypoint: the initialising server exited" >&2; exit 1; }
        sleep 0.1
    done
    if [ -n "${MARIADB_ROOT_PASSWORD:-}" ]; then
        password=${MARIADB_ROOT_PASSWORD//\\/\\\\}
        password=${password//\'/\\\'}
        mariadb --socket="$socket" -uroot --batch <<SQL
SET sql_log_bin=0;
DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY '$password';
CREATE USER 'root'@'%' IDENTIFIED BY '$password';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
    else
        mariadb --socket="$socket" -uroot --batch <<SQL
SET sql_log_bin=0;
DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
FLUSH PRIVILEGES;
CREATE USER 'root'@'%';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
    fi
    kill "$pid"
    wait "$pid" || :
    echo "entrypoint: initialised $datadir"
fi
exec "$@"
