"""What every benchmark shares: the result record, medians, interleaving, file trees."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Result:
    name: str
    value: float | None
    unit: str
    anchor: str
    anchor_value: float | None
    goal: str
    note: str = ""
    met: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleave(runs: int, *sides: Callable[[int], float]) -> list[list[float]]:
    """Run each side once per round, alternating which goes first, so drift hits both alike."""
    samples: list[list[float]] = [[] for _ in sides]
    for i in range(runs):
        order = list(range(len(sides)))
        if i % 2:
            order.reverse()
        for k in order:
            samples[k].append(sides[k](i))
    return samples


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def make_tree(root: str, files: int, per_dir: int = 1000, uid: int = 0, gid: int = 0) -> None:
    """A fresh tree of `files` empty files in directories of `per_dir`, owned by uid:gid."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    os.chown(root, uid, gid)
    for i in range((files + per_dir - 1) // per_dir):
        sub = os.path.join(root, f"d{i:05d}")
        os.mkdir(sub)
        os.chown(sub, uid, gid)
        for j in range(min(per_dir, files - i * per_dir)):
            path = os.path.join(sub, f"f{j:05d}")
            with open(path, "w"):
                pass
            if uid or gid:
                os.chown(path, uid, gid)
    os.sync()  # the tree's writeback must not land inside the timed part
