"""Volume names and `-o` options: every refusal names the option and what is allowed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ownvol.driver.options import (
    NAME_MAX,
    OPTIONS,
    Defaults,
    VolumeSpec,
    check_adoptable,
    parse_defaults,
    parse_options,
    validate_name,
)
from ownvol.driver.settings import SettingsError, from_env
from ownvol.profiles import PROFILES

D = Defaults()
ROOTS = ("/srv", "/data/vols")


@pytest.mark.parametrize("name", ["a", "redis-data", "proj_redis.1", "A9", "x" * NAME_MAX])
def test_good_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name,words", [
    ("", "empty"), ("../etc", "not a valid volume name"), ("a/b", "not a valid volume name"),
    ("a\0b", "not a valid volume name"), (".hidden", "not a valid volume name"), ("-x", "not a valid"),
    ("x" * (NAME_MAX + 1), f"at most {NAME_MAX}"), ("a b", "not a valid"), ("é", "not a valid"),
    (5, "must be a string"),
])
def test_bad_names(name, words):
    with pytest.raises(ValueError, match=words):
        validate_name(name)


def test_no_options_take_the_defaults():
    assert parse_options({}, D) == VolumeSpec(999, 999, 0o755, "on-root-mismatch")
    assert parse_options(None, D) == parse_options({}, D)


def test_explicit_options():
    spec = parse_options({"uid": "1000", "gid": "0", "mode": "0750", "policy": "always"}, D)
    assert spec == VolumeSpec(1000, 0, 0o750, "always")


def test_profile_gives_owner_and_mode_and_explicit_options_win():
    assert parse_options({"profile": "postgres-alpine"}, D) == \
        VolumeSpec(70, 70, 0o700, "on-root-mismatch", "postgres-alpine")
    assert parse_options({"profile": "redis-alpine", "gid": "999"}, D).gid == 999


@pytest.mark.parametrize("mode,value", [("755", 0o755), ("0755", 0o755), ("0o2775", 0o2775), ("7777", 0o7777),
                                        ("0", 0)])
def test_modes(mode, value):
    assert parse_options({"mode": mode}, D).mode == value


@pytest.mark.parametrize("opts,words", [
    ({"owner": "1"}, "unknown option 'owner'; valid options: " + ", ".join(OPTIONS)),
    ({"uid": "-1"}, "option uid: '-1' is not an integer from 0 to 4294967294"),
    ({"uid": "4294967295"}, "option uid: '4294967295' is not an integer"),
    ({"gid": "abc"}, "option gid: 'abc' is not an integer"),
    ({"gid": " 1"}, "option gid"),
    ({"uid": "1e3"}, "option uid"),
    ({"mode": "0999"}, "option mode: '0999' is not an octal mode from 0 to 7777"),
    ({"mode": "17777"}, "option mode"),
    ({"mode": "rwx"}, "option mode"),
    ({"profile": "oracle"},
     "option profile: 'oracle' is not a known profile; known profiles: " + ", ".join(sorted(PROFILES))),
    ({"policy": "sometimes"}, "option policy: 'sometimes' is not a policy; use one of on-root-mismatch, always, never"),
    ({"uid": 999}, "option uid: expected a string value, got int"),
])
def test_bad_options_name_the_option_and_what_is_allowed(opts, words):
    with pytest.raises(ValueError) as info:
        parse_options(opts, D, ROOTS)
    assert words in str(info.value)


def test_opts_must_be_an_object():
    with pytest.raises(ValueError, match="Opts must be an object"):
        parse_options(["uid=1"], D)


@given(st.integers(min_value=0, max_value=2**32 - 2))
def test_every_valid_uid_round_trips(uid):
    assert parse_options({"uid": str(uid)}, D).uid == uid


@pytest.mark.parametrize("path", ["/srv/redis-data", "/srv/a/b", "/data/vols/x"])
def test_adoptable_paths(path):
    assert parse_options({"path": path}, D, ROOTS).path == path


@pytest.mark.parametrize("path,words", [
    ("/", "system directory"), ("/srv", "system directory"), ("/etc/redis", "inside /etc"),
    ("/usr/local/x", "inside /usr"), ("/var/lib/docker/volumes/x", "inside /var/lib/docker"),
    ("/proc/1", "inside /proc"), ("/dev/shm/x", "inside /dev"), ("/boot/x", "inside /boot"),
    ("/sys/x", "inside /sys"), ("/home/me/x", "not below an allowed root"), ("relative/x", "not an absolute path"),
    ("/srv/../etc", "not in normal form"), ("/srv/x/", "not in normal form"), ("//srv/x", "not in normal form"),
    ("/srv/a\0", "NUL"), ("/data/vols", "not below an allowed root"),
    ("/var/lib/ownvol/volumes/x", "inside /var/lib/ownvol"),
])
def test_refused_paths(path, words):
    with pytest.raises(ValueError) as info:
        check_adoptable(path, ROOTS + ("/var/lib",), own_trees=("/var/lib/ownvol",))
    assert str(info.value).startswith("option path: ") and words in str(info.value)


def test_adoption_off_without_allowed_roots():
    with pytest.raises(ValueError, match="adoption is off"):
        check_adoptable("/srv/x", ())


def test_defaults_from_a_default_profile_and_explicit_settings():
    assert parse_defaults(profile="postgres") == Defaults(999, 999, 0o700, "on-root-mismatch", "postgres")
    assert parse_defaults(uid="1000", profile="redis").uid == 1000
    spec = parse_options({}, parse_defaults(profile="redis-alpine", policy="always"))
    assert (spec.uid, spec.gid, spec.policy, spec.profile) == (999, 1000, "always", "redis-alpine")


def test_settings_from_env():
    s = from_env({"OWNVOL_DRIVER_NAME": "ov2", "OWNVOL_DEFAULT_UID": "70", "OWNVOL_ALLOWED_ROOTS": "/srv:/data"})
    assert s.socket == "/run/docker/plugins/ov2.sock" and s.root == "/var/lib/ownvol"
    assert s.db_path == "/var/lib/ownvol/ownvol.db" and s.volumes_dir == "/var/lib/ownvol/volumes"
    assert s.defaults.uid == 70 and s.allowed_roots == ("/srv", "/data") and s.mount_root == ""
    assert from_env({}).allowed_roots == ("/srv", "/home", "/mnt")
    assert from_env({"OWNVOL_ALLOWED_ROOTS": ""}).allowed_roots == ()


@pytest.mark.parametrize("env,words", [
    ({"OWNVOL_DEFAULT_MODE": "999"}, "option mode"), ({"OWNVOL_WORKERS": "0"}, "OWNVOL_WORKERS"),
    ({"OWNVOL_ROOT": "var/lib"}, "OWNVOL_ROOT"), ({"OWNVOL_ALLOWED_ROOTS": "/srv/../etc"}, "OWNVOL_ALLOWED_ROOTS"),
    ({"OWNVOL_DEFAULT_POLICY": "x"}, "option policy"), ({"OWNVOL_LOG_LEVEL": "loud"}, "OWNVOL_LOG_LEVEL"),
    ({"OWNVOL_DRIVER_NAME": "a/b"}, "OWNVOL_DRIVER_NAME"), ({"OWNVOL_USERNS": "100000"}, "OWNVOL_USERNS"),
    ({"OWNVOL_USERNS": "0:100000:65536"}, "OWNVOL_USERNS"),
    ({"OWNVOL_SOCKET_OWNER": "1000"}, "OWNVOL_SOCKET_OWNER"), ({"OWNVOL_SOCKET_OWNER": "0:0"}, "OWNVOL_SOCKET_OWNER"),
    ({"OWNVOL_SOCKET_OWNER": "alice:alice"}, "OWNVOL_SOCKET_OWNER"),
])
def test_bad_settings_name_the_variable(env, words):
    with pytest.raises(SettingsError, match=words):
        from_env(env)
