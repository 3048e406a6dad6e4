"""bench/results.json (and machine.json) as the Markdown table BENCHMARKS.md shows: `python -m bench.markdown`."""

from __future__ import annotations

import json
import sys

from bench.run import RESULTS


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def table(results: list[dict]) -> str:
    rows = ["| name | value | unit | anchor | anchor value | goal | met |", "|---|---|---|---|---|---|---|"]
    for r in results:
        met = {None: "-", True: "yes", False: "**no**"}[r.get("met")]
        rows.append("| " + " | ".join(_cell(r[k]) for k in ("name", "value", "unit", "anchor", "anchor_value", "goal"))
                    + f" | {met} |")
    return "\n".join(rows)


def main() -> int:
    results = json.loads(RESULTS.read_text())
    machine = json.loads((RESULTS.parent / "machine.json").read_text())
    groups = machine.get("groups") or {}
    ran = f" (groups: {', '.join(f'{g} at {w}' for g, w in sorted(groups.items(), key=lambda i: i[1]))})" \
        if groups else ""
    print(f"Run {machine['when']} on {machine['machine']}{ran}.\n")
    print(table(results))
    print()
    for r in results:
        if r.get("note"):
            print(f"- `{r['name']}`: {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
