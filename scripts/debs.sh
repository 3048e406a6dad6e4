#!/usr/bin/env bash
# Download Debian packages of another suite (trixie, bookworm-backports, ...) without touching this
# machine's apt sources: a private apt state under the cache, the same mirror apt already uses.
#   scripts/debs.sh SUITE PACKAGE[=VERSION]...   -> prints the .deb paths, one a line
# The files land in $OWNVOL_CACHE/debs/SUITE (default /var/cache/ownvol); a second call reuses them.
set -euo pipefail
SUITE=${1:?usage: debs.sh SUITE PACKAGE...}
shift
CACHE=${OWNVOL_CACHE:-/var/cache/ownvol}
STATE=$CACHE/apt-$SUITE
OUT=$CACHE/debs/$SUITE
mkdir -p "$STATE/lists/partial" "$STATE/cache/archives/partial" "$OUT"

mirror() {
    local m=""
    [ -f /etc/apt/sources.list.d/debian.sources ] && m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    [ -z "$m" ] && [ -f /etc/apt/sources.list ] && m=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    echo "${m:-http://deb.debian.org/debian}"
}

echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $SUITE main" >"$STATE/sources.list"
APT=(-o "Dir::Etc::sourcelist=$STATE/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State=$STATE"
     -o "Dir::State::status=$STATE/status" -o "Dir::Cache=$STATE/cache" -o "APT::Get::List-Cleanup=0"
     -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
touch "$STATE/status"
# One update a day is enough; several callers at once share the lock below.
exec 9>"$STATE/lock"
flock 9
if [ -z "$(find "$STATE/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    apt-get "${APT[@]}" update -qq >&2
fi
cd "$OUT"
for pkg in "$@"; do
    name=${pkg%%=*}
    if ! ls "$OUT/${name}_"*.deb >/dev/null 2>&1; then
        apt-get "${APT[@]}" download -qq "$pkg" >&2
    fi
    find "$OUT" -maxdepth 1 -name "${name}_*.deb" | sort | tail -n 1
done
