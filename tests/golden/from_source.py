"""Write tests/golden/<server>/from-source.log: the lines each version's source prints for the messages the
matrix cannot provoke or does not hold (Redis 7.2 and 7.4 are not packaged here; fsync and rename failures,
fork failures, short writes). `python -m tests.golden.from_source REDIS_GIT VALKEY_GIT` with clones of
redis/redis and valkey-io/valkey (the `fetch` tool's mirrors): each format string is taken from the branch's
src/*.c (adjacent C literals joined), its conversions filled with the sample values below, and written
with the classic log prefix. The files are committed; the unit run reads them without the clones.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BRANCHES = {  # golden directory -> (which clone, branch)
    "redis-6.2": ("redis", "6.2"), "redis-7.0": ("redis", "7.0"), "redis-7.2": ("redis", "7.2"),
    "redis-7.4": ("redis", "7.4"), "redis-8.0": ("redis", "8.0"), "valkey-8.0": ("valkey", "8.0"),
}
# the start of a format string -> the values its conversions get, in order (a format with fewer takes the last)
SAMPLES: dict[str, tuple[str, ...]] = {
    "Can't open or create append-only dir ": ("appendonlydir", "Permission denied"),
    "Can't open the append-only file": ("appendonly.aof.1.incr.aof", "Permission denied"),
    "Fatal error: can't open the append log file ": ("appendonly.aof.1.base.rdb", "Permission denied"),
    "Fatal error: can't open the AOF manifest ": ("appendonlydir/appendonly.aof.manifest", "Permission denied"),
    "Can't open the AOF manifest file ": ("temp-appendonly.aof.manifest", "Permission denied"),
    "Error trying to write the temporary AOF manifest file ": ("temp-appendonly.aof.manifest",
                                                               "No space left on device"),
    "Error trying to rename the temporary AOF manifest file ": ("temp-appendonly.aof.manifest",
                                                                "appendonly.aof.manifest", "Permission denied"),
    "Error trying to rename the temporary AOF file ": ("temp-rewriteaof-bg-42.aof", "appendonly.aof",
                                                       "Permission denied"),
    "Opening the temp file for AOF rewrite in rewriteAppendOnlyFile(): ": ("Permission denied",),
    "Write error writing append only file on disk: ": ("No space left on device",),
    "Error moving temp append only file on the final destination: ": ("Permission denied",),
    "Fatal error: can't open the RDB file ": ("dump.rdb", "Permission denied"),
    "Fatal error loading the DB: ": ("Permission denied",),
    "Fatal error loading the DB, check server logs. Exiting.": (),
    "Can't chdir to '": ("/data", "Permission denied"),
    "Error writing to the AOF file: ": ("No space left on device",),
    "Short write while writing to ": ("10", "20"),
    "Can't recover from AOF write error when the AOF fsync policy is 'always'. Exiting...": (),
    "Can't persist AOF for fsync error when the ": ("Input/output error",),
    "Fail to fsync the AOF file: ": ("Input/output error",),
    "Fail to fsync the temp AOF file ": ("temp-rewriteaof-bg-42.aof", "Input/output error"),
    "Fail to fsync AOF directory ": ("appendonlydir", "Input/output error"),
    "Failed opening the temp RDB file ": ("temp-42.rdb", "/data", "Permission denied"),
    "Failed opening the RDB file ": ("dump.rdb", "/data", "Permission denied"),
    "Write error saving DB on disk": ("rdbSaveRio", "No space left on device"),
    "Write error while saving DB to the disk": ("rdbSaveRio", "No space left on device"),
    "Error moving temp DB file ": ("temp-42.rdb", "dump.rdb", "/data", "Permission denied"),
    "Failed to fsync directory while saving DB: ": ("Input/output error",),
    "Background saving error": (),
    "Background AOF rewrite terminated with error": (),
    "Can't save in background: fork: ": ("Cannot allocate memory",),
    "Can't rewrite append only file in background: fork: ": ("Cannot allocate memory",),
    "Background AOF rewrite has repeatedly failed and triggered the limit, will retry in ": ("1",),
}
_CALL = re.compile(r"serverLog\(LL_WARNING\s*,\s*((?:\"(?:[^\"\\]|\\.)*\"\s*)+)")
_LITERAL = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")
_CONVERSION = re.compile(r"%(?:lld|ld|lu|llu|zu|d|s|u)")


def formats(clone: Path, branch: str) -> list[str]:
    text = subprocess.run(["git", "-C", str(clone), "grep", "-h", "-z", "-e", "", branch, "--", "src/aof.c",
                           "src/rdb.c", "src/server.c", "src/config.c"], capture_output=True, text=True,
                          check=True).stdout.replace("\0", "\n")
    found = []
    for call in _CALL.finditer(text):
        fmt = "".join(_LITERAL.findall(call.group(1))).encode().decode("unicode_escape")
        found.append(fmt)
    return found


def lines_for(fmts: list[str], role: str = "M") -> list[str]:
    out = []
    for prefix, values in SAMPLES.items():
        for fmt in fmts:
            if fmt.startswith(prefix):
                wanted = len(_CONVERSION.findall(fmt))
                fill = iter(values[len(values) - wanted:] if wanted < len(values) else values)  # errno comes last
                message = _CONVERSION.sub(lambda _, fill=fill: next(fill, "?"), fmt)
                out.append(f"1:{role} 30 Nov 2026 00:00:00.000 # {message}")
                break
    return out


def main(redis_git: str, valkey_git: str) -> None:
    clones = {"redis": Path(redis_git), "valkey": Path(valkey_git)}
    for server, (which, branch) in BRANCHES.items():
        fmts = formats(clones[which], branch)
        commit = subprocess.run(["git", "-C", str(clones[which]), "rev-parse", branch], capture_output=True,
                                text=True, check=True).stdout.strip()
        name = "Redis" if which == "redis" else "Version"
        version = subprocess.run(["git", "-C", str(clones[which]), "show", f"{branch}:src/version.h"],
                                 capture_output=True, text=True, check=True).stdout
        number = re.search(r'_VERSION "([^"]+)"', version).group(1)
        block = ["", f"*** FATAL CONFIG FILE ERROR ({name} {number}) ***", "Reading the configuration file, at line 4",
                 ">>> 'dir \"/data\"'", "Permission denied"]
        misconf = ("-MISCONF " + ("Redis" if which == "redis" else "Valkey") + " is configured to save RDB snapshots,"
                   " but it's currently unable to persist to disk. Commands that may modify the data set are disabled")
        out = HERE / server
        out.mkdir(exist_ok=True)
        (out / "from-source.log").write_text("\n".join([*lines_for(fmts), *block, misconf]) + "\n")
        (out / "from-source.commit").write_text(f"{which} {branch} {commit} ({number})\n")
        print(f"{server}: {len(lines_for(fmts))} lines from {which} {branch} {commit[:12]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
