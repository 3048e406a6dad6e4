"""Every catalogue pattern against the golden logs of every version (tests/golden, README "Servers under test").

`captured` files are `docker logs` of the real servers (tests/golden/capture.py), `source` files the lines each
version's source prints (tests/golden/from_source.py; the branch and commit are in from-source.commit).
expected.json says what each file must yield: (line number, pattern, error type).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ownvol.hook import patterns
from ownvol.hook.services import by_family

GOLDEN = Path(__file__).parent.parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
# Versions with neither a package nor a source branch here: their tags stand on the nearest version's wording.
NEAREST = {"redis-8.2": "redis-8.0", "valkey-8.1": "valkey-8.0"}


def read(name: str) -> list[tuple[int, patterns.Detection]]:
    """A golden file's detections with its service's catalogue (`service` in expected.json; Redis by default)."""
    catalogue = by_family(EXPECTED[name].get("service", "redis")).catalogue
    return patterns.read_log((GOLDEN / name).read_text().splitlines(), catalogue)


def test_every_golden_file_is_expected_and_every_expectation_has_its_file():
    on_disk = {str(p.relative_to(GOLDEN)) for p in GOLDEN.glob("*/*.log")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_log_yields_what_is_expected(name):
    got = [[n, d.pattern.id, d.error_type] for n, d in read(name)]
    assert got == EXPECTED[name]["detections"]


@pytest.mark.parametrize("pattern", patterns.CATALOGUE, ids=lambda p: p.id)
def test_each_pattern_matches_a_golden_line_of_every_version_it_is_tagged_with(pattern):
    for version in pattern.versions:
        directories = {version, NEAREST.get(version, version)}
        hits = [name for name, entry in EXPECTED.items() if name.split("/")[0] in directories
                and any(d[1] == pattern.id for d in entry["detections"])]
        assert hits, f"{pattern.id} is tagged {version} but no golden line of {sorted(directories)} matches it"


@pytest.mark.parametrize("pattern", patterns.CATALOGUE, ids=lambda p: p.id)
def test_no_pattern_matches_a_version_it_is_not_tagged_with(pattern):
    """The version tags are exact: a pattern seen in a version's lines is tagged with it."""
    for name, entry in EXPECTED.items():
        version = name.split("/")[0]
        if any(d[1] == pattern.id for d in entry["detections"]):
            assert version in pattern.versions, f"{pattern.id} matched {name} but is not tagged {version}"


@pytest.mark.parametrize("pattern", by_family("postgres").catalogue + by_family("mariadb").catalogue,
                         ids=lambda p: p.id)
def test_each_database_pattern_matches_a_captured_line_of_every_version_it_is_tagged_with(pattern):
    for version in pattern.versions:
        assert any(name.split("/")[0] == version and any(d[1] == pattern.id for d in entry["detections"])
                   for name, entry in EXPECTED.items()), f"{pattern.id}: no captured line of {version}"


def test_captured_files_come_from_every_server_of_the_matrix():
    captured = {n.split("/")[0] for n, e in EXPECTED.items() if e["origin"] == "captured"}
    assert captured == {"redis-6.2", "redis-7.0", "redis-8.0", "valkey-8.0", "valkey-8.1", "postgres-15",
                        "postgres-17", "mariadb-10.11", "mariadb-11.8"}
    sourced = {n.split("/")[0] for n, e in EXPECTED.items() if e["origin"] == "source"}
    assert {"redis-7.2", "redis-7.4"} <= sourced


def test_the_ownership_crash_of_each_captured_version_is_permission_denied():
    for server in ("redis-6.2", "redis-7.0", "redis-8.0", "valkey-8.0", "valkey-8.1"):
        for scenario in ("aof-dir-root-owned", "dir-not-enterable", "rdb-unreadable", "bgsave-root-owned"):
            found = read(f"{server}/{scenario}.log")
            assert found and found[0][1].error_type == "permission-denied", (server, scenario)


def test_every_prefix_format_gives_the_same_message():
    names = ["valkey-8.1/aof-dir-root-owned.log", "valkey-8.1/iso8601-aof-dir.log",
             "valkey-8.1/milliseconds-aof-dir.log", "valkey-8.1/logfmt-aof-dir.log"]
    messages = {read(n)[0][1].message for n in names}
    assert messages == {"Can't open or create append-only dir appendonlydir: Permission denied"}


def test_a_fatal_config_block_needs_an_errno_reason():
    block = ["", "*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***", "Reading the configuration file, at line 2",
             ">>> 'appendonly maybe'", "argument must be 'yes' or 'no'"]
    assert patterns.read_log(block) == []
    denied = patterns.read_log(block[:3] + [">>> 'dir \"/data\"'", "Permission denied"])
    assert [(d.pattern.id, d.context["dir"], d.context["config_line"]) for _, d in denied] == [
        ("config-fatal", "/data", "2")]


def test_the_fatal_exits_of_the_captures_are_marked_fatal():
    for server in ("redis-6.2", "redis-7.0", "redis-8.0", "valkey-8.0", "valkey-8.1"):
        last = read(f"{server}/runtime-disk-full-always.log")[-1][1]
        assert last.pattern.id == "aof-always-exit" and last.pattern.fatal


def test_explain_prints_each_failure_and_its_json():
    from click.testing import CliRunner

    from ownvol.hook.commands import explain

    log = (GOLDEN / "redis-8.0" / "rdb-unreadable.log").read_text()
    table = CliRunner().invoke(explain, ["-"], input=log)
    assert table.exit_code == 0 and "rdb-file-read" in table.output and "permission-denied" in table.output
    as_json = CliRunner().invoke(explain, ["--json", str(GOLDEN / "redis-7.0" / "dir-not-enterable.log")])
    found = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(f["pattern"], f["error_type"], f["phase"], f["line_number"]) for f in found] == [
        ("config-fatal", "permission-denied", "startup", 5)]
    assert found[0]["line"].splitlines()[-1] == "Permission denied"
    empty = CliRunner().invoke(explain, ["-"], input="1:M 30 Nov 2026 01:00:00.000 * Ready to accept connections\n")
    assert empty.output.strip() == "no known failure in this log"


def test_the_path_each_captured_path_failure_names():
    expected = {"paths-sentinel-config": ("/etc/ov/sentinel.conf", ""),
                "paths-cluster-lock": ("/node-conf/nodes.conf", ""),
                "paths-aclfile": ("/acl/users.acl", ""), "paths-include": ("/inc/extra.conf", ""),
                "paths-unixsocket": (None, "unixsocket"), "paths-sentinel-save": (None, "configfile"),
                "paths-cluster-save": (None, "cluster-config-file")}
    for server in ("redis-6.2", "redis-7.0", "redis-8.0", "valkey-8.0", "valkey-8.1"):
        for scenario, (path, path_of) in expected.items():
            found = read(f"{server}/{scenario}.log")
            assert found, (server, scenario)
            for _, detection in found:
                assert detection.context.get("path") == path, (server, scenario)
                assert detection.as_dict().get("path_of", "") == path_of, (server, scenario)
                assert detection.as_dict()["needs"] in ("create", "read")


def test_the_log_file_block_names_its_path_in_each_form():
    four = read("redis-6.2/paths-logfile.log")
    assert [(d.context.get("path"), d.as_dict().get("path_of")) for _, d in four] == [("/logs/redis.log", None)]
    for server in ("redis-7.0", "redis-8.0", "valkey-8.0", "valkey-8.1"):
        two = read(f"{server}/paths-logfile.log")
        assert [(d.context.get("path"), d.as_dict().get("path_of"), d.error_type) for _, d in two] == [
            (None, "logfile", "permission-denied")]
        assert two[0][1].line.splitlines()[-1] == "Can't open the log file: Permission denied"


def test_a_block_never_swallows_the_line_or_block_after_it():
    two = ["*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***", "Can't open the log file: Permission denied"]
    unfinished = ["*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***", "Reading the configuration file, at line 2"]
    after = "1:M 30 Nov 2026 01:00:00.000 # Can't open /n/nodes.conf in order to acquire a lock: Permission denied"
    # a two-line block, then a prefixed line: both read
    found = patterns.read_log(["", *two, after])
    assert [(n, d.pattern.id) for n, d in found] == [(3, "config-fatal"), (4, "cluster-config-lock")]
    # an unfinished block ends at the next prefixed line, which is read itself
    found = patterns.read_log([*unfinished, after])
    assert [(n, d.pattern.id) for n, d in found] == [(3, "cluster-config-lock")]
    # an unfinished block ends at the next header: the second block is read whole
    found = patterns.read_log([*unfinished, "", *two])
    assert [(n, d.pattern.id, d.as_dict().get("path_of")) for n, d in found] == [(5, "config-fatal", "logfile")]
    # a bad directive's block (no errno) yields nothing and lets the next line through
    bad = ["*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***", "Reading the configuration file, at line 2",
           ">>> 'appendonly maybe'", "argument must be 'yes' or 'no'"]
    assert [(n, d.pattern.id) for n, d in patterns.read_log([*bad, after])] == [(5, "cluster-config-lock")]


def test_explain_says_which_path_a_failure_is_about():
    from click.testing import CliRunner

    from ownvol.hook.commands import explain

    lock = CliRunner().invoke(explain, [str(GOLDEN / "redis-7.0" / "paths-cluster-lock.log")])
    assert "cluster-config-lock" in lock.output and "path: /node-conf/nodes.conf; the hook repairs the directory " \
                                                    "that holds it" in lock.output
    save = CliRunner().invoke(explain, [str(GOLDEN / "valkey-8.1" / "paths-sentinel-save.log")])
    assert "path: the server's `configfile` setting" in save.output
    acl = CliRunner().invoke(explain, ["--json", str(GOLDEN / "redis-8.0" / "paths-aclfile.log")])
    found = [json.loads(line) for line in acl.output.splitlines()]
    assert [(f["pattern"], f["context"]["path"], f["needs"]) for f in found] == [("acl-file", "/acl/users.acl", "read")]
