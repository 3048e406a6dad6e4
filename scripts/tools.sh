#!/usr/bin/env bash
# The programs the status-page and monitoring tests run, from Debian's packages: chromium (driven headless by
# Playwright, never a browser of Playwright's own) and promtool (from the prometheus package; this script
# starts no daemon). apt runs under /var/lock/ownvol-apt.lock, shared with other apt users.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "tools: ${need[*]} missing and installing them needs root" >&2
    exit 1
fi
echo "tools: installing Debian's ${need[*]}"
LOCK=/var/lock/ownvol-apt.lock
flock "$LOCK" apt-get update -qq
DEBIAN_FRONTEND=noninteractive flock "$LOCK" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
