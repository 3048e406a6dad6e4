"""The run's table (per fault kind: injected, healed by the product alone, healed once the runner retried a failed
`docker start` as a user would (faults.Fault.retried), median / p95 / max time to heal (of both), median / max time
until writes were accepted again) and its JSON."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from tests.chaos.faults import Fault
from tests.chaos.schedule import KINDS


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def rows(faults: list[Fault]) -> list[dict]:
    out = []
    for kind in [*KINDS, "all"]:
        of = [f for f in faults if kind in ("all", f.kind)]
        if not of:
            continue
        heals = [f.heal for f in of if f.heal is not None]
        writes = [f.writes_again for f in of]
        out.append({"kind": kind, "injected": len(of), "healed": len([f for f in of if f.heal is not None and
                                                                      not f.retried]),
                    "retried": len([f for f in of if f.heal is not None and f.retried]),
                    "heal_median": statistics.median(heals) if heals else None,
                    "heal_p95": p95(heals) if heals else None, "heal_max": max(heals) if heals else None,
                    "writes_median": statistics.median(writes), "writes_max": max(writes)})
    return out


def table(faults: list[Fault]) -> str:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = (f"{'fault kind':<24} {'injected':>8} {'healed':>6} {'retried':>7} {'heal med':>8} {'p95':>6} {'max':>6}"
            f" {'writes med':>10} {'max':>6}")
    lines = [head, "-" * len(head)]
    for r in rows(faults):
        lines.append(f"{r['kind']:<24} {r['injected']:>8} {r['healed']:>6} {r['retried']:>7} {s(r['heal_median']):>8}"
                     f" {s(r['heal_p95']):>6} {s(r['heal_max']):>6} {s(r['writes_median']):>10}"
                     f" {s(r['writes_max']):>6}")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
