#!/bin/bash
# The official image's docker-entrypoint.sh (docker-library/postgres), reduced to its start-up path:
#   as root: create PGDATA, give what is not postgres's to postgres, mode 0700, and drop to postgres (setpriv);
#   as postgres: chmod 0700 PGDATA where it can, initdb an empty PGDATA, then exec the server.
# initdb leaves local and loopback connections on trust, as the official image does; other hosts need
# POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust.
set -Eeuo pipefail

if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

mkdir -p "$PGDATA"
chmod 700 "$PGDATA" 2>/dev/null || :

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
    fi
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "entrypoint: PGDATA is empty: set POSTGRES_PASSWORD (or _FILE) or POSTGRES_HOST_AUTH_METHOD=trust" >&2
        exit 1
    fi
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is flags split on blanks, as the official image splits them
        initdb --username="${POSTGRES_USER:-postgres}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
            ${POSTGRES_INITDB_ARGS:-} >/dev/null
    else
        # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is flags split on blanks, as the official image splits them
        initdb --username="${POSTGRES_USER:-postgres}" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    fi
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    echo "entrypoint: initialised $PGDATA"
fi
exec "$@"
