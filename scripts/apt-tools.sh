#!/usr/bin/env bash
# Programs the tests run, from Debian's packages, installed when missing; nothing is started (no daemon,
# no systemd as PID 1). apt runs under /var/lock/ownvol-apt.lock, shared with other apt users.
#   scripts/apt-tools.sh COMMAND=PACKAGE...   e.g. promtool=prometheus (a COMMAND with a / is a path)
set -euo pipefail
need=()
for pair in "$@"; do
    cmd=${pair%%=*} pkg=${pair#*=}
    if [[ $cmd == */* ]]; then [ -x "$cmd" ] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    [[ " ${need[*]-} " == *" $pkg "* ]] || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "apt-tools: ${need[*]} missing and installing them needs root" >&2
    exit 1
fi
echo "apt-tools: installing Debian's ${need[*]}"
LOCK=/var/lock/ownvol-apt.lock
flock "$LOCK" apt-get update -qq
DEBIAN_FRONTEND=noninteractive flock "$LOCK" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
