#!/usr/bin/env bash
# mypy over the installed package's layout: plugin/ is ownvol.driver and hooks/ is ownvol.hook (setuptools
# package-dir), which mypy cannot map by itself, so build/typecheck/ownvol mirrors the package with symlinks.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/ownvol"
for f in ownvol/*.py; do ln -s "../../../$f" "$tree/$f"; done
ln -s ../../../plugin "$tree/ownvol/driver"
ln -s ../../../hooks "$tree/ownvol/hook"
here=$PWD
(cd "$tree" && "$here/.venv/bin/mypy" --config-file "$here/pyproject.toml" --cache-dir "$here/.mypy_cache" -p ownvol) \
    | sed -e 's#^ownvol/driver/#plugin/#' -e 's#^ownvol/hook/#hooks/#'
