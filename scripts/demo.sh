#!/usr/bin/env bash
# make demo: the seed's failure for real, and the hook healing it. Run right after `make up`.
# A Redis ($REDIS_IMAGE, user 999, appendonly yes, --restart on-failure, host network on a free loopback port) whose
# data directory, bind-mounted from the host, belongs to root: it crashes with "Can't open or create append-only dir
# appendonlydir: Permission denied", as in the seed. make up's hook recognises the message, gives the directory to
# 999:999, and the restart policy's next start succeeds; the hook proves Redis healthy. The container and the
# directory are removed at the end, also on Ctrl-C or a failure.
#   DEMO_HOOK_ADDR   the hook's status address (default 127.0.0.1:9808, make up's)
#   DEMO_HOOK_STATE  the hook's state dir, where its journal is (default /var/lib/ownvol/hook, make up's)
#   DEMO_HOOK_LOG    the hook's JSON events (default /var/log/ownvol/hook.log, make up's)
#   DEMO_LABEL       KEY=VALUE put on the container, for a hook started with --selector (default none)
set -euo pipefail
cd "$(dirname "$0")/.."
ADDR=${DEMO_HOOK_ADDR:-127.0.0.1:9808}
STATE=${DEMO_HOOK_STATE:-/var/lib/ownvol/hook}
HOOK_LOG=${DEMO_HOOK_LOG:-${OWNVOL_LOGS:-/var/log/ownvol}/hook.log}
REDIS_IMAGE=${REDIS_IMAGE:-ownvol/redis:7}
OWNVOL=.venv/bin/ownvol
CANARY="Can't open or create append-only dir appendonlydir: Permission denied"
name=ownvol-demo-$$
dir="" ran=""

say() { echo "demo: $*"; }
# The traps write to fd 3, this script's stdout: a trap that runs as a command fails (set -e) or is interrupted runs
# under that command's redirections (`docker run ... >/dev/null`).
exec 3>&1
cleanup() {  # removes first, then tells (a reader gone, SIGPIPE, must not leave anything behind)
    trap - EXIT INT TERM HUP
    [ -z "$ran" ] || docker rm -f "$name" >/dev/null 2>&1 || true
    [ -z "$dir" ] || rm -rf "$dir"
    [ -z "$ran" ] || say "removed the container $name" >&3
    [ -z "$dir" ] || say "removed $dir" >&3
}
trap cleanup EXIT
trap 'echo >&3; say interrupted >&3; exit 130' INT TERM HUP
trap 'exit 141' PIPE  # its reader gone: still through cleanup

# wait_for SECONDS WHAT COMMAND...: COMMAND until it succeeds, or fail saying WHAT
wait_for() {
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "FAILED: no $what within $seconds s" >&2
            return 1
        fi
        sleep 0.5
    done
}

if ! $OWNVOL status --addr "$ADDR" >/dev/null 2>&1; then
    say "no hook answers on $ADDR: run 'make up' first" >&2
    exit 1
fi
docker image inspect "$REDIS_IMAGE" >/dev/null 2>&1 || { say "$REDIS_IMAGE is missing (make redis-image)" >&2; exit 1; }

port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /var/tmp/ownvol-demo.XXXXXX)
chown root:root "$dir"
chmod 0755 "$dir"
labels=()
[ -z "${DEMO_LABEL:-}" ] || labels=(--label "$DEMO_LABEL")

say "1. the seed's failure: Redis ($REDIS_IMAGE) as user 999 with appendonly yes, its /data bind-mounted from"
say "   $dir, owned by $(stat -c %U:%G "$dir"); --restart on-failure, as Docker's restart policy alone would retry it"
ran=1
docker run -d --name "$name" --user 999:999 --network host --restart on-failure "${labels[@]}" \
    -v "$dir:/data" "$REDIS_IMAGE" \
    redis-server --port "$port" --bind 127.0.0.1 --dir /data --appendonly yes >/dev/null
crashed() { docker logs "$name" 2>&1 | grep -F "$CANARY"; }
wait_for 60 "crash with the seed's message" crashed >/dev/null
say "   it crashed: $(crashed | head -n 1)"

say "2. the hook on $ADDR heals it; its status, as it changes (ownvol status --addr $ADDR):"
healthy() {
    local line
    line=$($OWNVOL status --addr "$ADDR" --json | .venv/bin/python -c '
import json, sys
for c in json.load(sys.stdin)["containers"]:
    if c["name"] == sys.argv[1]:
        print(c.get("health") or "unknown", c.get("incident") or "none")' "$name")
    [ -z "$line" ] || [ "$line" = "$last" ] || { say "   $name: health ${line% *}, open incident ${line#* }"; last=$line; }
    [[ $line == healthy* ]] && [ "$(stat -c %u "$dir")" = 999 ]
}
last=""
wait_for 120 "heal" healthy
if [ -r "$HOOK_LOG" ]; then
    say "   the hook's events for $name ($HOOK_LOG):"
    .venv/bin/python - "$HOOK_LOG" "$name" <<'PY'
import json, sys
events = []
for line in open(sys.argv[1], errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if isinstance(e, dict) and e.get("container") == sys.argv[2]:
        events.append(e)
t0 = events[0]["ts"] if events else 0
for e in events:
    what = {"detected": lambda: f"{e.get('pattern')}: {e.get('error_type')} ({e.get('context', {})})",
            "incident": lambda: f"#{e.get('incident')} {e.get('type')}, opened from its {e.get('origin')}",
            "action": lambda: f"{e.get('action')} {e.get('result')}, {e.get('detail', {}).get('path', '')} -> "
                              f"{e.get('detail', {}).get('owner', '')}, verified {e.get('verified')}",
            "recovered": lambda: f"#{e.get('incident')} by {e.get('by')} in {e.get('seconds')} s",
            "health": lambda: f"{e.get('previous')} -> {e.get('state')}",
            "died": lambda: f"exit code {e.get('exit_code')}"}.get(e["event"], lambda: "")()
    print(f"demo:     +{e['ts'] - t0:5.2f} s  {e['event']:<10} {what}")
PY
fi

say "3. Redis answers and persists: PING $(docker exec "$name" redis-cli -p "$port" ping)," \
    "SET $(docker exec "$name" redis-cli -p "$port" set demo healed), aof_enabled" \
    "$(docker exec "$name" redis-cli -p "$port" info persistence | tr -d '\r' | awk -F: '$1 == "aof_enabled" {print $2}');" \
    "$dir is now $(stat -c %u:%g "$dir") and holds $(ls "$dir")"

say "4. the incident, in the hook's journal ($STATE; ownvol history shows them all):"
journal=$($OWNVOL history --state-dir "$STATE" --json --limit 50)
.venv/bin/python - "$name" "$journal" <<'PY'
import json, sys
for i in json.loads(sys.argv[2])["incidents"]:
    if i["container_name"] == sys.argv[1]:
        acts = ", ".join(f"{a['action']} {a['result']}" for a in i["actions"])
        print(f"demo:    #{i['id']} {i['error_type']} from its {i['origin']}: \"{i['detail'].get('message', '')}\"")
        print(f"demo:    {i['status']}, {i['outcome']} ({acts}) in {i['closed_at'] - i['detected_at']:.2f} s")
        break
PY
say "the status page: http://$ADDR/ (the incident stays in the journal; the container and its directory go now)"
