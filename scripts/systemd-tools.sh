#!/usr/bin/env bash
# systemd-analyze and systemd-socket-activate (Debian's systemd package) for the host-install tests;
# installed if missing. Nothing is started: no systemd needs to run as PID 1.
set -euo pipefail
if command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null; then exit 0; fi
echo "systemd-tools: installing Debian's systemd (systemd-analyze, systemd-socket-activate)"
flock /var/lock/ownvol-apt.lock apt-get update -qq
DEBIAN_FRONTEND=noninteractive flock /var/lock/ownvol-apt.lock apt-get install -y -qq --no-install-recommends systemd >/dev/null
