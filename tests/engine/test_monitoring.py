"""examples/prometheus and examples/grafana against the real tools and the real hook: promtool checks the rules
and runs their unit tests, the dashboard's expressions parse as PromQL, and every metric either names is one
a running hook exports on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.common import ROOT

pytestmark = pytest.mark.engine

PROMETHEUS = ROOT / "examples" / "prometheus"
DASHBOARD = ROOT / "examples" / "grafana" / "ownvol-hook.json"
# Series a family of each type exposes (prometheus_client's text format).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
HOOK_JOB = 'up{job="ownvol-hook"}'  # Prometheus's own series for the hook's scrape job


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
    done = subprocess.run([tool, *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "ownvol-rules.yaml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The ownvol metric names an expression reads (label values and matchers stripped first)."""
    bare = re.sub(r'"[^"]*"', "", re.sub(r"\{[^}]*\}", "", expr))
    return set(re.findall(r"\bownvol_[a-z0-9_]+\b", bare))


def test_the_alert_rules_pass_promtool_and_their_unit_tests():
    assert "SUCCESS: 4 rules found" in promtool("check", "rules", "ownvol-rules.yaml")
    promtool("test", "rules", "ownvol-rules.test.yaml")
    promtool("check", "config", "prometheus.yaml")


def test_the_dashboards_expressions_are_promql(tmp_path: Path):
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{k}", "expr": e.replace("$__rate_interval", "5m")} for k, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", str(path))


def test_every_metric_the_dashboard_and_rules_read_is_one_the_hook_exports(hook):
    text = hook().metrics()
    exported = {family.name + suffix for family in text_string_to_metric_families(text)
                for suffix in SUFFIXES[family.type]}
    assert "ownvol_hook_incidents_total" in exported and "ownvol_hook_data_mount_seconds_until_full" in exported
    for expr in rule_exprs() + dashboard_exprs():
        names = metric_names(expr)
        assert names or HOOK_JOB in expr, f"{expr!r} reads no metric of the hook's"
        assert names <= exported, f"{expr!r} reads {sorted(names - exported)}, which the hook does not export"
    assert metric_names('rate(ownvol_hook_nope_total{type="x"}[5m])') - exported == {"ownvol_hook_nope_total"}
