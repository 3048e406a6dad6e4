#!/bin/sh
# docker-library/redis's docker-entrypoint.sh, with setpriv in place of gosu: `redis-server ARGS`,
# `valkey-server ARGS`, `-flag ...` and `x.conf` run the server; started as root, it first gives
# WORKDIR to the service user, then re-executes itself as that user.
set -e
server=redis-server
[ "$OWNVOL_SERVICE_USER" = valkey ] && server=valkey-server
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- "$server" "$@"
fi
if [ "$1" = "$server" ] && [ "$(id -u)" = 0 ]; then
	find . \! -user "$OWNVOL_SERVICE_USER" -exec chown "$OWNVOL_SERVICE_USER" '{}' +
	exec setpriv --reuid="$OWNVOL_SERVICE_USER" --regid="$OWNVOL_SERVICE_USER" --init-groups "$0" "$@"
fi
um="$(umask)"
if [ "$um" = 0022 ]; then
	umask 0077
fi
exec "$@"
