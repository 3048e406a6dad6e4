"""bench/results.json (and machine.json) as the Markdown table BENCHMARKS.md shows: `python -m bench.markdown`.

When bench/previous.json exists (the previous machine's results.json and machine.json: {"machine": ...,
"results": [...]}), the table has a column with its value of each line, so a reader sees what moved with the
machine and what moved with the code.
"""

from __future__ import annotations

import json
import sys

from bench.run import RESULTS

PREVIOUS = RESULTS.parent / "previous.json"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def table(results: list[dict], previous: dict[str, dict] | None = None) -> str:
    """The lines as a Markdown table; with previous (line name -> that line on the previous machine), a column of
    their values beside the latest."""
    extra = " previous machine |" if previous is not None else ""
    rows = [f"| name | value |{extra} unit | anchor | anchor value | goal | met |",
            "|---|---|" + ("---|" if previous is not None else "") + "---|---|---|---|---|"]
    for r in results:
        met = {None: "-", True: "yes", False: "**no**"}[r.get("met")]
        cells = [_cell(r["name"]), _cell(r["value"])]
        if previous is not None:
            cells.append(_cell((previous.get(r["name"]) or {}).get("value")))
        cells += [_cell(r[k]) for k in ("unit", "anchor", "anchor_value", "goal")]
        rows.append("| " + " | ".join(cells) + f" | {met} |")
    return "\n".join(rows)


def _machine_text(machine: dict) -> str:
    groups = machine.get("groups") or {}
    loads = machine.get("loads") or {}

    def ran(group: str, when: str) -> str:
        load = loads.get(group)
        return f"{group} at {when}" + (f" (load {load['before'][0]:g} before, {load['after'][0]:g} after)"
                                       if load else "")

    text = f"{machine['when']} on {machine['machine']}"
    if machine.get("cpu"):
        text += f", CPU {machine['cpu']}"
    if machine.get("kernel"):
        text += f", kernel {machine['kernel']}"
    if groups:
        text += f" (groups: {', '.join(ran(g, w) for g, w in sorted(groups.items(), key=lambda i: i[1]))})"
    return text


def main() -> int:
    results = json.loads(RESULTS.read_text())
    machine = json.loads((RESULTS.parent / "machine.json").read_text())
    previous = json.loads(PREVIOUS.read_text()) if PREVIOUS.exists() else None
    print(f"Run {_machine_text(machine)}.\n")
    if previous is not None:
        print(f"Previous machine: run {_machine_text(previous['machine'])}.\n")
    print(table(results, {r["name"]: r for r in previous["results"]} if previous is not None else None))
    print()
    for r in results:
        if r.get("note"):
            print(f"- `{r['name']}`: {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
