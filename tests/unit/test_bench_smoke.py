"""`make bench` is importable and knows every figure's group; nothing here is timed or touches the engine."""

from __future__ import annotations

import pytest

from bench import run
from bench.harness import percentile


def test_every_group_of_the_issue_table_is_registered():
    assert set(run._groups()) == {"repair", "start", "mount", "preflight", "scale", "heal", "heal-db", "burst",
                                  "watcher", "idmap", "start-idmap"}


def test_unknown_group_is_refused_with_the_known_ones(capsys):
    assert run.main(["no-such-group"]) == 2
    known = ("known: ['burst', 'heal', 'heal-db', 'idmap', 'mount', 'preflight', 'repair', 'scale', 'start', "
             "'start-idmap', 'watcher']")
    assert known in capsys.readouterr().err


@pytest.mark.parametrize("q, want", [(50, 50), (99, 99), (100, 100), (1, 1)])
def test_percentile_is_nearest_rank(q, want):
    assert percentile([float(x) for x in range(100, 0, -1)], q) == want
