"""Hostile requests on the real plugin socket (gunicorn, two workers, no engine in sight).

Each one gets a short JSON Err that names the problem and never a traceback; the plugin keeps
answering with the same workers; a refused Create leaves nothing in the database or on disk; and
nothing outside the plugin's root changes (its parent tree is snapshotted around every request).
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from tests.support.engine import wait_for
from tests.support.fixtures_plugin import PluginProcess
from tests.support.hostile import json_reply, raw_bytes, raw_request, snapshot

MAX_ERR = 400  # characters: an Err is a sentence, not an echo of the attack
OUTSIDE = ("/etc/ownvol-hostile", "/var/lib/docker/ownvol-hostile", "/ownvol-hostile")


def _workers(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


@pytest.fixture(scope="module")
def plugin():
    p = PluginProcess(None, OWNVOL_WORKERS="2").start()
    os.symlink("/etc", p.adopt / "link-to-etc")
    (p.adopt / "a-file").write_text("not a directory")
    workers = wait_for(lambda: len(_workers(p.proc.pid)) == 2 and _workers(p.proc.pid), 30, what="two workers")
    try:
        yield p
        log = p.log()
        assert "Traceback" not in log, log[-3000:]
        assert not [line for line in log.splitlines() if line.startswith("forged")], "a request forged a log line"
        assert _workers(p.proc.pid) == workers, "a worker died (or was replaced) during the corpus"
    finally:
        p.destroy()


def _long(n: int) -> str:
    return "x" * n


def _cases(adopt: str, root: str) -> list[tuple[str, str, bytes | dict, str]]:
    """(id, endpoint, body (bytes as sent, or an object to encode), words the Err must hold)."""
    C = "/VolumeDriver.Create"

    def opts(**o):
        return {"Name": "v", "Opts": o}

    return [
        # the body itself
        ("not-json", C, b"{bad", "not valid JSON"),
        ("latin-1-bytes", C, b"\xff\xfe\x00", "not valid JSON"),
        ("json-array", C, b"[1, 2]", "must be a JSON object, got list"),
        ("json-string", C, b'"Name"', "must be a JSON object, got str"),
        ("json-number", C, b"42", "must be a JSON object, got int"),
        ("json-true", C, b"true", "must be a JSON object, got bool"),
        ("json-null", C, b"null", "Name is required"),
        ("empty-body", C, b"", "Name is required"),
        ("nested-30000-deep", C, b"[" * 30000, "nested too deeply"),
        ("integer-of-5000-digits", C, b'{"Name": ' + b"7" * 5000 + b"}", "a number of more than"),
        ("body-of-5-MiB", C, b'{"Name": "v", "pad": "' + b"x" * (5 << 20) + b'"}', "larger than 65536 bytes"),
        ("body-just-over-64-KiB", C, b'{"Name": "v", "pad": "' + b"x" * 65536 + b'"}', "larger than 65536 bytes"),
        # Name
        ("name-missing", C, {"Opts": {}}, "Name is required"),
        ("name-null", C, {"Name": None}, "Name is required"),
        ("name-empty", C, {"Name": ""}, "Name must not be empty"),
        ("name-int", C, {"Name": 5}, "Name must be a string, got int"),
        ("name-list", C, {"Name": ["v"]}, "Name must be a string, got list"),
        ("name-object", C, {"Name": {"v": 1}}, "Name must be a string, got dict"),
        ("name-bool", C, {"Name": True}, "Name must be a string, got bool"),
        ("name-dotdot", C, {"Name": ".."}, "not a valid volume name"),
        ("name-dot", C, {"Name": "."}, "not a valid volume name"),
        ("name-slash", C, {"Name": "/"}, "not a valid volume name"),
        ("name-traversal", C, {"Name": "../../etc/passwd"}, "not a valid volume name"),
        ("name-subdir", C, {"Name": "a/b"}, "not a valid volume name"),
        ("name-nul", C, {"Name": "a\0b"}, "not a valid volume name"),
        ("name-accented", C, {"Name": "rédis"}, "not a valid volume name"),
        ("name-emoji", C, {"Name": "\U0001f433"}, "not a valid volume name"),
        ("name-zero-width", C, {"Name": "a\u200bb"}, "not a valid volume name"),
        ("name-lone-surrogate", C, b'{"Name": "a\\ud800"}', "not a valid volume name"),
        ("name-forges-a-log-line", C, {"Name": "v\nforged action=VolumeDriver.Remove volume=x outcome=ok"},
         "not a valid volume name"),
        ("name-5000-chars", C, {"Name": _long(5000)}, "at most 128"),
        ("name-129-chars", C, {"Name": _long(129)}, "at most 128"),
        ("name-dash-first", C, {"Name": "-rf"}, "not a valid volume name"),
        # Opts
        ("opts-string", C, {"Name": "v", "Opts": "uid=1"}, "Opts must be an object"),
        ("opts-list", C, {"Name": "v", "Opts": ["uid", "1"]}, "Opts must be an object"),
        ("opts-number", C, {"Name": "v", "Opts": 7}, "Opts must be an object"),
        ("unknown-option", C, opts(colour="red"), "unknown option 'colour'; valid options: gid, mode, ownership, path"),
        ("unknown-option-50k-name", C, opts(**{_long(50000): "1"}), "unknown option"),
        ("uid-minus-1", C, opts(uid="-1"), "option uid: '-1' is not an integer from 0 to 4294967294"),
        ("uid-2^32", C, opts(uid="4294967296"), "option uid"),
        ("uid-2^32-1", C, opts(uid="4294967295"), "option uid"),
        ("uid-abc", C, opts(uid="abc"), "option uid: 'abc'"),
        ("uid-empty", C, opts(uid=""), "option uid"),
        ("uid-hex", C, opts(uid="0x10"), "option uid"),
        ("uid-fullwidth-digits", C, opts(uid="\uff11\uff12"), "option uid"),
        ("uid-50k-digits", C, opts(uid="9" * 50000), "option uid"),
        ("uid-as-number", C, opts(uid=999), "option uid: expected a string value, got int"),
        ("uid-null", C, opts(uid=None), "option uid: expected a string value"),
        ("uid-object", C, opts(uid={"$gt": 0}), "option uid: expected a string value, got dict"),
        ("gid-minus-5", C, opts(gid="-5"), "option gid"),
        ("mode-9999", C, opts(mode="9999"), "option mode: '9999' is not an octal mode from 0 to 7777"),
        ("mode-17777", C, opts(mode="17777"), "option mode"),
        ("mode-bare-0o", C, opts(mode="0o"), "option mode"),
        ("mode-negative", C, opts(mode="-755"), "option mode"),
        ("mode-symbolic", C, opts(mode="u+rwx"), "option mode"),
        ("profile-unknown", C, opts(profile="oracle"), "option profile: 'oracle' is not a known profile; known"),
        ("profile-empty", C, opts(profile=""), "option profile"),
        ("profile-dunder", C, opts(profile="__class__"), "option profile"),
        ("policy-unknown", C, opts(policy="sometimes"), "option policy: 'sometimes' is not a policy"),
        ("policy-empty", C, opts(policy=""), "option policy"),
        # path=
        ("path-root", C, opts(path="/"), "system directory"),
        ("path-etc", C, opts(path="/etc"), "inside /etc"),
        ("path-below-etc", C, opts(path="/etc/ownvol-hostile"), "inside /etc"),
        ("path-var-lib-docker", C, opts(path="/var/lib/docker"), "inside /var/lib/docker"),
        ("path-below-var-lib-docker", C, opts(path="/var/lib/docker/ownvol-hostile"), "inside /var/lib/docker"),
        ("path-relative", C, opts(path="ownvol-hostile"), "not an absolute path"),
        ("path-relative-up", C, opts(path="../../etc"), "not an absolute path"),
        ("path-empty", C, opts(path=""), "not an absolute path"),
        ("path-dotdot-out", C, opts(path=f"{adopt}/../state/x"), "not in normal form"),
        ("path-allowed-root-itself", C, opts(path=adopt), "not below an allowed root"),
        ("path-plugin-root", C, opts(path=f"{root}/volumes/x"), f"inside {root}"),
        ("path-outside-allowed", C, opts(path="/ownvol-hostile"), "not below an allowed root"),
        ("path-through-a-symlink", C, opts(path=f"{adopt}/link-to-etc/ownvol-hostile"), "is a symlink"),
        ("path-a-file", C, opts(path=f"{adopt}/a-file"), "is not a directory"),
        ("path-component-300-chars", C, opts(path=f"{adopt}/{_long(300)}"), "too long"),
        ("path-5000-chars", C, opts(path=f"{adopt}/" + "d/" * 2500 + "x"), "too long"),
        ("path-1500-deep", C, opts(path=f"{adopt}/" + "d/" * 1500 + "x"), "directories deep; at most 64"),
        ("path-lone-surrogate", C, b'{"Name": "v", "Opts": {"path": "' + adopt.encode() + b'/x\\udc80"}}',
         "option path"),
        ("path-newline", C, opts(path=f"{adopt}/x\ny"), "control character"),
        ("path-nul", C, opts(path=f"{adopt}/x\0y"), "NUL"),
        ("path-as-number", C, opts(path=1), "option path: expected a string value, got int"),
        # the other endpoints
        ("mount-without-id", "/VolumeDriver.Mount", {"Name": "v"}, "ID is required"),
        ("mount-id-int", "/VolumeDriver.Mount", {"Name": "v", "ID": 3}, "ID must be a string, got int"),
        ("mount-id-300-chars", "/VolumeDriver.Mount", {"Name": "v", "ID": _long(300)}, "at most 256 characters"),
        ("mount-id-newline", "/VolumeDriver.Mount", {"Name": "v", "ID": "m\nforged"}, "ID must be printable"),
        ("mount-unknown-volume", "/VolumeDriver.Mount", {"Name": "nope", "ID": "m"}, "no such volume: nope"),
        ("unmount-name-slash", "/VolumeDriver.Unmount", {"Name": "/", "ID": "m"}, "not a valid volume name"),
        ("remove-traversal", "/VolumeDriver.Remove", {"Name": "../volumes"}, "not a valid volume name"),
        ("get-traversal", "/VolumeDriver.Get", {"Name": "../../"}, "not a valid volume name"),
        ("path-name-list", "/VolumeDriver.Path", {"Name": ["v"]}, "Name must be a string"),
        ("unknown-endpoint", "/VolumeDriver.Format", {"Name": "v"}, "unknown endpoint /VolumeDriver.Format"),
        ("unknown-endpoint-forges-a-log-line", "/VolumeDriver.X%0Aforged%20action=VolumeDriver.Remove", {},
         "unknown endpoint"),
        ("activate-bad-json", "/Plugin.Activate", b"{", "not valid JSON"),
    ]


CASES = _cases("{adopt}", "{root}")


def _rows(db: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT name, state FROM volumes").fetchall() + \
            conn.execute("SELECT volume, id FROM mounts").fetchall()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_a_hostile_request_gets_a_short_err_and_changes_nothing(plugin, case):
    _, endpoint, body, words = _cases(str(plugin.adopt), str(plugin.root))[case]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = snapshot(plugin.base, skip=("state", "plugin.log"))
    status, content, headers = raw_request(plugin.socket, endpoint, raw)
    reply = json_reply(status, content)
    assert 400 <= status < 600 and headers.get("content-type") == "application/vnd.docker.plugins.v1.1+json"
    err = reply.get("Err")
    assert isinstance(err, str) and words in err, reply
    assert len(err) <= MAX_ERR, f"an Err of {len(err)} characters: {err[:200]}..."
    assert "Traceback" not in err and "internal error" not in err, err
    assert set(reply) == {"Err"}

    assert plugin.call("List")["Volumes"] == []  # it keeps answering, and nothing was made
    assert _rows(str(plugin.root / "ownvol.db")) == []
    assert os.listdir(plugin.root / "volumes") == [] if (plugin.root / "volumes").exists() else True
    assert snapshot(plugin.base, skip=("state", "plugin.log")) == before
    assert not any(os.path.lexists(p) for p in OUTSIDE)


def test_a_chunked_body_of_megabytes_is_refused_by_size(plugin):
    body = b'{"Name": "v", "pad": "' + b"x" * (5 << 20) + b'"}'
    status, content, _ = raw_request(plugin.socket, "/VolumeDriver.Create", body, chunked=True)
    assert status == 413 and "larger than 65536 bytes" in json_reply(status, content)["Err"]
    assert plugin.call("List")["Volumes"] == []


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"POST /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /VolumeDriver.List HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 20000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
], ids=["not-http", "request-line-10k", "content-length-negative", "header-20k", "tls-hello"])
def test_requests_that_are_not_http_are_refused_before_the_app(plugin, data):
    """gunicorn refuses them itself (4xx, its own text, never the app); the plugin keeps answering."""
    status, _, _ = raw_bytes(plugin.socket, data, timeout=30)
    assert 400 <= status < 500 or status == 0
    assert plugin.call("List")["Volumes"] == []


def test_a_good_create_still_works_after_the_corpus(plugin):
    plugin.call("Create", Name="after-the-corpus", Opts={"profile": "redis"})
    mounted = plugin.call("Mount", Name="after-the-corpus", ID="m")["Mountpoint"]
    assert mounted == str(plugin.data_dir("after-the-corpus"))
    plugin.call("Unmount", Name="after-the-corpus", ID="m")
    plugin.call("Remove", Name="after-the-corpus")
    assert plugin.call("List")["Volumes"] == []
