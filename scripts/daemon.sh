#!/usr/bin/env bash
# daemon.sh start NAME CMD...  |  daemon.sh stop NAME  |  daemon.sh status NAME
# A background process with a pid file under $OWNVOL_RUN and a log under $OWNVOL_LOGS; idempotent.
set -euo pipefail
RUN=${OWNVOL_RUN:-/run/ownvol}
LOGS=${OWNVOL_LOGS:-/var/log/ownvol}
action=$1 name=$2
shift 2
pidfile="$RUN/$name.pid"
running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$action" in
start)
    mkdir -p "$RUN" "$LOGS"
    if running; then echo "$name: already running (pid $(cat "$pidfile"))"; exit 0; fi
    setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "$name: started (pid $!, log $LOGS/$name.log)"
    ;;
stop)
    if running; then
        pid=$(cat "$pidfile")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "$name: stopped"
    else
        echo "$name: not running"
    fi
    rm -f "$pidfile"
    ;;
status)
    if running; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: not running"; exit 1; fi
    ;;
*) echo "usage: daemon.sh start|stop|status NAME [CMD...]" >&2; exit 2 ;;
esac
