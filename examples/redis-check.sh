#!/bin/sh
# ownvol's post_start check: run inside the Redis container, as its own user, right after it started.
# It proves persistence from the inside: Redis answers, its data dir (CONFIG GET dir) takes a new
# file from this user, and INFO persistence reports no failed write, save or rewrite. Exit 1, with
# the reason on stderr, otherwise: Compose then reports the hook as failed and `up` fails loudly.
#   usage: redis-check.sh [PORT]       (default 6379; a password is read from REDISCLI_AUTH)
# It runs after the container started, so it cannot prevent a crash; it says so when Redis is down.
set -u
port=${1:-6379}
wait=${OWNVOL_CHECK_WAIT:-20}

fail() {
    echo "ownvol-check: FAILED on port $port: $*" >&2
    exit 1
}

cli() {
    redis-cli -h 127.0.0.1 -p "$port" "$@" 2>&1
}

tries=$((wait * 5))
while :; do
    reply=$(cli ping)
    [ "$reply" = PONG ] && break
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || fail "Redis does not answer PING within ${wait}s (last reply: $reply)"
    sleep 0.2
done

dir=$(cli config get dir | sed -n 2p)
[ -n "$dir" ] || fail "CONFIG GET dir gave no directory"
probe="$dir/.ownvol-check.$$"
if ! ( : >"$probe" ) 2>/dev/null; then
    fail "data dir $dir is not writable by uid $(id -u) (owner $(stat -c %u:%g "$dir"), mode $(stat -c %a "$dir")): Redis cannot persist"
fi
rm -f "$probe"

info=$(cli info persistence | tr -d '\r')
field() {
    echo "$info" | sed -n "s/^$1://p"
}
bad=""
[ "$(field loading)" = 0 ] || bad="$bad loading:$(field loading)"
for key in rdb_last_bgsave_status aof_last_bgrewrite_status aof_last_write_status; do
    value=$(field "$key")
    [ "$value" = ok ] || bad="$bad $key:${value:-missing}"
done
[ -z "$bad" ] || fail "INFO persistence:$bad"

echo "ownvol-check: ok: port $port, dir $dir writable by uid $(id -u), aof_enabled:$(field aof_enabled), persistence statuses ok"
