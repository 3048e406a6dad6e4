"""The hook's listener and what reads it, without an engine: the page, /status and /metrics from one WSGI app on
a real loopback socket, the page's model from a real journal, and `ownvol status` / `ownvol history` tables."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ownvol.hook import commands, web
from ownvol.hook.board import Board
from ownvol.hook.forecast import SpaceWatch
from ownvol.hook.journal import Journal
from ownvol.hook.model import Health
from ownvol.hook.telemetry import Telemetry
from tests.support.common import free_port

LINE = "Can't open or create append-only dir appendonlydir: Permission denied"
STATUS = {"containers": [{"id": "0123456789ab", "name": "redis-a", "health": "healthy", "reasons": [],
                          "following": True, "incident": False},
                         {"id": "ba9876543210", "name": "redis-b-with-a-long-name", "health": "refusing-writes",
                          "reasons": ["rdb_last_bgsave_status:err"], "following": True, "incident": True}],
          "open_incidents": [{"id": 2, "container": "redis-b-with-a-long-name", "type": "permission-denied",
                              "origin": "health"}],
          "success_rates": []}


def _journal(path: str | Path = ":memory:") -> Journal:
    journal = Journal(path)
    first = journal.open_incident("a" * 64, "redis-a", "permission-denied", "log", {"message": LINE}, time.time() - 9)
    journal.start_action(first.id, 0, "repair-ownership")
    journal.finish_action(first.id, 0, "ok", False, {"verify": {"state": "down"}})
    journal.start_action(first.id, 1, "restart")
    journal.finish_action(first.id, 1, "ok", True, {"verify": {"state": "healthy"}})
    journal.close_incident(first.id, "resolved", "verified healthy after restart")
    journal.open_incident("b" * 64, "redis-b-with-a-long-name", "permission-denied", "health",
                          {"message": "rdb_last_bgsave_status:err <script>"}, time.time())
    return journal


def _watched(name: str, cid: str, state: str, reasons: list[str]) -> SimpleNamespace:
    last = Health(state, reasons, "running", "PONG", owner={"uid": 0, "gid": 0, "ok": state == "healthy"},
                  target={"owner": "999:999", "owner_source": "user",
                          "mount": {"type": "bind", "source": f"/srv/{name}", "destination": "/data", "name": ""}})
    return SimpleNamespace(id=cid, name=name, health=state, reasons=reasons, last=last)


@pytest.fixture
def served():
    journal = _journal()
    telemetry = Telemetry(out=io.StringIO())
    watched = [_watched("redis-a", "a" * 64, "healthy", []),
               _watched("redis-b-with-a-long-name", "b" * 64, "latent", ["aof_last_bgrewrite_status:err"])]
    board = Board(journal, lambda: watched, lambda cid: cid.startswith("b"), SpaceWatch(telemetry), None)
    port = free_port()
    server = web.serve(f"127.0.0.1:{port}", web.create_app(telemetry.metrics, lambda: STATUS, board.view))
    yield f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def _get(addr: str, path: str) -> tuple[str, str, dict]:
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as reply:
        return reply.read().decode(), reply.headers["Content-Type"], dict(reply.headers)


def test_one_listener_serves_the_page_status_and_metrics(served):
    page, ctype, headers = _get(served, "/")
    assert ctype.startswith("text/html")
    assert 'data-container="redis-a"' in page and 'data-container="redis-b-with-a-long-name"' in page
    assert LINE in page.replace("&#39;", "'")
    assert "<script>" not in page.split("</head>")[1]  # the incident's text is escaped, never markup
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "http://" not in page and "https://" not in page  # nothing from another origin
    assert json.loads(_get(served, "/status")[0]) == STATUS
    metrics, ctype, _ = _get(served, "/metrics")
    assert ctype.startswith("text/plain") and "# TYPE ownvol_hook_incidents_total counter" in metrics
    assert _get(served, "/static/page.js")[0].count("fetch(\"/board\"") == 1
    board, _, _ = _get(served, "/board")
    assert "<html" not in board and 'data-container="redis-a"' in board
    with pytest.raises(urllib.error.HTTPError, match="404"):
        _get(served, "/nothing")


def test_the_page_model_tells_each_container_incident_rate_and_latent_fault():
    journal = _journal()
    telemetry = Telemetry(out=io.StringIO())
    watched = [_watched("redis-a", "a" * 64, "healthy", []),
               _watched("redis-b-with-a-long-name", "b" * 64, "latent", ["aof_last_bgrewrite_status:err"])]
    view = Board(journal, lambda: watched, lambda cid: False, SpaceWatch(telemetry), None).view()
    a, b = view["containers"]
    assert (a["name"], a["owner_wanted"], a["owner_actual"], a["mount"]) == \
        ("redis-a", "999:999", "0:0", "bind /srv/redis-a -> /data")
    assert a["last_incident"]["status"] == "resolved" and b["last_incident"]["status"] == "open"
    resolved = next(i for i in view["incidents"] if i["status"] == "resolved")
    assert resolved["line"] == LINE
    assert [(s["action"], s["verified"], s["state"]) for s in resolved["steps"]] == \
        [("repair-ownership", False, "down"), ("restart", True, "healthy")]
    assert {(r["action"], r["succeeded"], r["failed"]) for r in view["rates"]} == \
        {("repair-ownership", 0, 1), ("restart", 1, 0)}
    assert view["types"] == [{"type": "permission-denied", "incidents": 2, "resolved": 1, "gave_up": 0,
                              "mean_seconds": pytest.approx(9, abs=1), "healed_by": "restart"}]
    assert view["latent"] == [{"subject": "redis-b-with-a-long-name", "kind": "health",
                               "what": "aof_last_bgrewrite_status:err"}]
    assert view["volumes"] == [] and view["volumes_error"] == "no engine"


def test_status_prints_an_aligned_table_and_json_unchanged(served):
    text = CliRunner().invoke(commands.status, ["--addr", served]).output
    rows = [line for line in text.splitlines() if "redis-" in line]
    assert len(rows) == 3  # two containers, one open incident
    assert rows[0].index("healthy") == rows[1].index("refusing-writes")  # one column for health
    assert "recovering" in rows[1] and "#2" in rows[2]
    assert json.loads(CliRunner().invoke(commands.status, ["--addr", served, "--json"]).output) == STATUS


def test_history_prints_incidents_actions_and_rates_as_tables(tmp_path: Path):
    db = tmp_path / "journal.sqlite"
    _journal(db).close()
    # as a pipe prints it with no COLUMNS set (pytest-xdist gives its workers the controller's terminal width)
    result = CliRunner(env={"COLUMNS": None}).invoke(commands.history, ["--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first = next(line for line in lines if line.strip().startswith("#1"))
    second = next(line for line in lines if line.strip().startswith("#2"))
    assert first.index("permission-denied") == second.index("permission-denied")
    assert "resolved" in first and "0. repair-ownership: ok not verified" in first
    assert any("1. restart: ok verified" in line for line in lines)
    assert any("restart" in line and "1/1" in line and "100%" in line for line in lines)
    data = json.loads(CliRunner().invoke(commands.history, ["--db", str(db), "--json"]).output)
    assert [i["status"] for i in data["incidents"]] == ["open", "resolved"]
    assert {(r["action"], r["succeeded"]) for r in data["success_rates"]} == {("repair-ownership", 0), ("restart", 1)}
