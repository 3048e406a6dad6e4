"""Properties of name and option parsing, over inputs hypothesis makes up (hostile fragments mixed in).

Whatever comes in: a ValueError whose message is short and names what was wrong, or a value that is
safe to use (a name that is one path component, an owner and mode in range, a path that cannot leave
the allowed roots or enter a system tree). Through the app: never a 500, and a refusal leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ownvol.driver.app import create_app
from ownvol.driver.options import (
    ID_MAX,
    MODE_MAX,
    NAME_MAX,
    OPTIONS,
    PATH_DEPTH_MAX,
    PATH_MAX,
    POLICIES,
    Defaults,
    check_adoptable,
    parse_id,
    parse_mode,
    parse_options,
    validate_name,
)
from ownvol.driver.settings import from_env
from ownvol.system_paths import SYSTEM_DIRS, SYSTEM_TREES

MAX_ERR = 400
ROOTS = ("/srv", "/data/vols")
FRAGMENTS = ["..", ".", "/", "//", "\0", "\n", "\r", "\t", " ", "\ud800", "\udc80", "é", "\u200b", "\U0001f433",
             "-", "_", "~", "$", "%2e", "\\", "a", "Z", "9", "0", "etc", "srv", "var", "lib", "docker", "vols",
             "data", "proc", "x" * 300]
hostile_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)
any_text = st.one_of(hostile_text, st.text(), st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,140}", fullmatch=True))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
                           max_leaves=6)
option_values = st.one_of(any_text, st.integers(min_value=-2, max_value=2**33).map(str), json_values,
                          st.sampled_from(["0755", "0o7777", "redis", "always", "never", "/srv/x", "/srv/../etc"]))
opts_dicts = st.dictionaries(st.sampled_from(OPTIONS) | any_text, option_values, max_size=4)


class Refused(str):
    """A parse's refusal: its message."""


def _parsed(parse, value, *starts: str):
    """parse(value), or its refusal once the message is found short and starting with one of starts."""
    try:
        return parse(value)
    except ValueError as exc:
        message = Refused(exc)
        assert len(message) <= MAX_ERR, message[:200]
        assert message.startswith(starts), message[:200]
        return message


@given(any_text)
def test_a_name_is_refused_in_words_or_is_one_safe_path_component(name):
    got = _parsed(validate_name, name, "Name")
    if isinstance(got, Refused):
        return
    assert got == name and 1 <= len(name) <= NAME_MAX
    assert name.isascii() and name.isprintable() and "/" not in name and name not in (".", "..")
    joined = os.path.normpath(os.path.join("/var/lib/ownvol/volumes", name))
    assert os.path.dirname(joined) == "/var/lib/ownvol/volumes" and os.path.basename(joined) == name


@given(st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}", fullmatch=True))
def test_every_name_dockers_local_driver_takes_is_taken(name):
    assert validate_name(name) == name


@given(any_text)
def test_an_id_is_only_ever_plain_ascii_digits_in_range(text):
    value = _parsed(lambda t: parse_id("uid", t), text, "option uid: ")
    if isinstance(value, Refused):
        return
    assert re.fullmatch(r"[0-9]+", text) and value == int(text) and 0 <= value <= ID_MAX


@given(st.integers(min_value=0, max_value=MODE_MAX), st.sampled_from(["{:o}", "0{:o}", "0o{:o}", "{:04o}"]))
def test_every_mode_in_range_parses_in_each_spelling(mode, spelling):
    assert parse_mode(spelling.format(mode)) == mode


@given(any_text)
def test_a_mode_is_octal_up_to_7777_or_refused(text):
    value = _parsed(parse_mode, text, "option mode: ")
    if isinstance(value, Refused):
        return
    assert re.fullmatch(r"(0o)?[0-7]+", text) and 0 <= value <= MODE_MAX


segments = st.sampled_from(["srv", "data", "vols", "etc", "var", "lib", "docker", "proc", "..", ".", "", "x",
                            "redis-data", "é", "a\nb", "x" * 300, "home", "mnt", "usr", "ownvol"])
paths = st.tuples(st.sampled_from(["/", "//", "", "./"]), st.lists(segments, max_size=8), st.booleans()).map(
    lambda t: t[0] + "/".join(t[1]) + ("/" if t[2] else ""))


@given(st.one_of(paths, any_text))
def test_an_adoptable_path_never_leaves_the_allowed_roots_nor_enters_a_system_tree(path):
    own = ("/var/lib/ownvol",)
    got = _parsed(lambda p: check_adoptable(p, ROOTS, own_trees=own), path, "option path: ")
    if isinstance(got, Refused):
        return
    assert got == path and path.isprintable() and os.path.isabs(path) and os.path.normpath(path) == path
    parts = path.split("/")[1:]
    assert ".." not in parts and "." not in parts and "" not in parts
    assert len(path.encode()) <= PATH_MAX and len(parts) <= PATH_DEPTH_MAX
    assert all(len(p.encode()) <= 255 for p in parts)
    assert any(os.path.commonpath([path, root]) == root and path != root for root in ROOTS)
    assert path not in SYSTEM_DIRS
    assert not any(path == tree or path.startswith(tree + "/") for tree in SYSTEM_TREES + own)


@given(st.one_of(opts_dicts, json_values))
def test_options_give_a_spec_in_range_or_one_short_err_naming_the_option(opts):
    spec = _parsed(lambda o: parse_options(o, Defaults(), ROOTS), opts, "option ", "unknown option ", "Opts must be")
    if isinstance(spec, Refused):
        if spec.startswith("option "):
            assert spec.split(":")[0].removeprefix("option ") in OPTIONS
        return
    assert isinstance(opts, dict) or opts is None
    assert 0 <= spec.uid <= ID_MAX and 0 <= spec.gid <= ID_MAX and 0 <= spec.mode <= MODE_MAX
    assert spec.policy in POLICIES
    assert spec.path is None or check_adoptable(spec.path, ROOTS) == spec.path


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    base = tmp_path_factory.mktemp("props")
    (base / "adopt").mkdir()
    settings_ = from_env({"OWNVOL_ROOT": str(base / "state"), "OWNVOL_ALLOWED_ROOTS": str(base / "adopt")})
    client = create_app(settings_).test_client()
    assert client.post("/VolumeDriver.List").get_json() == {"Volumes": [], "Err": ""}  # the database is made
    return client, settings_, base


create_bodies = st.fixed_dictionaries({}, optional={"Name": st.one_of(any_text, json_values), "Opts": st.one_of(
    opts_dicts, json_values)}) | json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(create_bodies)
def test_any_create_body_gets_a_json_err_or_a_volume_never_a_500(app_client, body):
    client, s, base = app_client
    reply = client.post("/VolumeDriver.Create", data=json.dumps(body))
    data = reply.get_json()
    assert reply.status_code in (200, 400), (reply.status_code, data)
    assert set(data) == {"Err"} and len(data["Err"]) <= MAX_ERR
    with sqlite3.connect(f"file:{s.db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT name, path, adopted FROM volumes").fetchall()
    if reply.status_code == 400:
        assert data["Err"] and rows == []
        assert not os.path.exists(s.volumes_dir) or os.listdir(s.volumes_dir) == []
        return
    assert len(rows) == 1
    name, path, adopted = rows[0]
    assert name == body["Name"]
    inside = str(base / "adopt") if adopted else s.volumes_dir
    assert os.path.commonpath([path, inside]) == inside and os.path.isdir(path)
    assert client.post("/VolumeDriver.Remove", data=json.dumps({"Name": name})).get_json() == {"Err": ""}
