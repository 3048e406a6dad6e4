"""`make bench`: run the benchmarks, print a table, write bench/results.json.

    python -m bench.run                 every benchmark
    python -m bench.run repair mttr     only those whose group name is given: their lines in results.json
                                        are replaced, the other groups' lines stay (machine.json: when each ran)
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Result

RESULTS = Path(__file__).resolve().parent / "results.json"


def _groups() -> dict[str, Callable[[], list[Result]]]:
    from bench import ownership_bench

    groups: dict[str, Callable[[], list[Result]]] = {"repair": ownership_bench.repair_vs_chown}
    try:
        from bench import driver_bench

        groups.update(driver_bench.GROUPS)
    except ImportError:
        pass
    try:
        from bench import hook_bench

        groups.update(hook_bench.GROUPS)
    except ImportError:
        pass
    return groups


def _loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (os.getloadavg), rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ("" when it does not)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def print_table(results: list[Result]) -> None:
    rows = [("name", "value", "unit", "anchor", "anchor value", "goal", "met")]
    for r in results:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        rows.append((r.name, _fmt(r.value), r.unit, r.anchor, _fmt(r.anchor_value), r.goal, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for r in results:
        if r.note:
            print(f"- {r.name}: {r.note}")


def main(argv: list[str]) -> int:
    groups = _groups()
    wanted = argv or list(groups)
    unknown = [g for g in wanted if g not in groups]
    if unknown:
        print(f"unknown benchmark group(s) {unknown}; known: {sorted(groups)}", file=sys.stderr)
        return 2
    results: list[Result] = []
    loads: dict[str, dict] = {}
    for name in wanted:
        started = time.monotonic()
        before = _loadavg()
        print(f"bench: {name} ... (load {before})", flush=True)
        results.extend(groups[name]())
        loads[name] = {"before": before, "after": _loadavg(), "seconds": round(time.monotonic() - started),
                       "kernel": platform.release()}  # a group rerun later may run on another machine
        print(f"bench: {name} took {time.monotonic() - started:.0f} s (load {loads[name]['after']})", flush=True)
    print()
    print_table(results)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = [r.as_dict() for r in results]
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}", "when": when,
            "cpu": _cpu_model(), "kernel": f"{platform.release()} {platform.version()}",
            "groups": dict.fromkeys(wanted, when), "loads": loads}
    if argv and RESULTS.exists():  # some groups: the other groups' lines stay, each group says when it ran
        fresh = {line["name"]: line for line in payload}  # a line measured again keeps its place in the table
        payload = [fresh.pop(line["name"], line) for line in json.loads(RESULTS.read_text())] + list(fresh.values())
        machine = RESULTS.parent / "machine.json"
        before = json.loads(machine.read_text()) if machine.exists() else {}
        meta["groups"] = {**before.get("groups", {}), **meta["groups"]}
        meta["loads"] = {**before.get("loads", {}), **loads}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS.parent / "machine.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
