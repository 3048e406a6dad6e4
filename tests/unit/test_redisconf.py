"""hooks/redisconf.py against Redis's own rules (src/sds.c sdssplitargs, src/config.c, src/server.c main)."""

from __future__ import annotations

import pytest

from ownvol.hook.redisconf import ConfigSyntaxError, command_line, default_user_password, load, split_args


@pytest.mark.parametrize("line, args", [
    ("dir /data", ["dir", "/data"]),
    ("  dir    /data  ", ["dir", "/data"]),
    ('dir "/my data"', ["dir", "/my data"]),
    ("dir '/my data'", ["dir", "/my data"]),
    ('requirepass "a\\"b\\\\c"', ["requirepass", 'a"b\\c']),
    ('x "\\x41\\x42\\n"', ["x", "AB\n"]),
    ('x "\\xZZ"', ["x", "xZZ"]),  # not two hex digits: the backslash escapes the x alone
    ("x 'it\\'s'", ["x", "it's"]),
    ("x 'a\\nb'", ["x", "a\\nb"]),  # single quotes keep every other backslash
    ('save ""', ["save", ""]),
    ('a"b c"', ["ab c"]),  # a quote inside a word opens a quoted part of that word
])
def test_split_args_as_sdssplitargs(line, args):
    assert split_args(line) == args


@pytest.mark.parametrize("line", ['dir "/data', "dir '/data", 'dir "/da"ta', "dir '/da'ta"])
def test_unbalanced_or_glued_quotes_are_refused(line):
    with pytest.raises(ConfigSyntaxError):
        split_args(line)


def test_command_line_config_file_then_options():
    file, options = command_line(["/etc/redis.conf", "--port", "7000", "--save", "", "--Dir", "/x"])
    assert file == "/etc/redis.conf"
    assert [(o.name, o.args, o.origin) for o in options] == [
        ("port", ("7000",), "command line"), ("save", ("",), "command line"), ("dir", ("/x",), "command line")]
    file, options = command_line(["--port", "7000", "--bind", "127.0.0.1", "::1"])
    assert file is None
    assert [(o.name, o.args) for o in options] == [("port", ("7000",)), ("bind", ("127.0.0.1", "::1"))]


def files(mapping):
    return lambda path: mapping.get(path)


def test_later_lines_win_and_names_are_case_insensitive():
    conf = load(["/c/redis.conf"], files({"/c/redis.conf": "port 7000\nPORT 7001\n# port 9\n   \ndir /a\n"}))
    assert conf.get("port") == "7001" and conf.origin("port") == "/c/redis.conf:2"
    assert conf.dir == "/a" and conf.get("dir") == "/a"


def test_command_line_overrides_the_file():
    conf = load(["/c/redis.conf", "--port", "7002", "--dir", "/b"],
                files({"/c/redis.conf": "port 7000\ndir /a\nappendonly yes\n"}))
    assert (conf.get("port"), conf.origin("port")) == ("7002", "command line")
    assert conf.dir == "/b" and conf.get("appendonly") == "yes"


def test_include_is_read_where_it_stands():
    conf = load(["/c/redis.conf"], files({
        "/c/redis.conf": "port 7000\ninclude /c/extra.conf\nappenddirname aofs\n",
        "/c/extra.conf": "port 7005\nappenddirname other\ndbfilename x.rdb\n"}))
    assert conf.get("port") == "7005"  # the include came after port 7000
    assert conf.get("appenddirname") == "aofs"  # and before this line
    assert conf.get("dbfilename") == "x.rdb"
    assert conf.files == ["/c/redis.conf", "/c/extra.conf"]


def test_include_glob_in_sorted_order():
    listing = {"/c/conf.d": ["20-b.conf", "10-a.conf", "README"]}
    conf = load(["/c/redis.conf"], files({
        "/c/redis.conf": "include /c/conf.d/*.conf\n",
        "/c/conf.d/10-a.conf": "port 1\n", "/c/conf.d/20-b.conf": "port 2\n"}), list_dir=listing.get)
    assert conf.get("port") == "2" and conf.files[1:] == ["/c/conf.d/10-a.conf", "/c/conf.d/20-b.conf"]


def test_relative_paths_follow_the_working_dir_and_each_dir():
    conf = load(["redis.conf", "--dir", "sub"], files({"/etc/r/redis.conf": "dir /var/lib\ndir redis\n"}),
                cwd="/etc/r")
    assert conf.files == ["/etc/r/redis.conf"]
    assert conf.dir == "/var/lib/redis/sub"


def test_defaults_and_what_could_not_be_read():
    conf = load(["/missing.conf"], files({}), cwd="/data")
    assert conf.get("port") == "6379" and conf.get("appenddirname") == "appendonlydir"
    assert conf.get("dbfilename") == "dump.rdb" and conf.dir == "/data" and conf.origin("dir") == "default"
    assert conf.problems == ["cannot read config file /missing.conf"]
    broken = load(["/c.conf"], files({"/c.conf": 'dir "/x\nport 1\n'}))
    assert broken.get("port") == "1" and "unbalanced quotes" in broken.problems[0]


def test_include_loops_end():
    conf = load(["/a.conf"], files({"/a.conf": "include /a.conf\nport 3\n"}))
    assert conf.get("port") == "3" and any("nested deeper" in p for p in conf.problems)


def test_password_from_requirepass_or_the_acl_default_user():
    assert default_user_password(load(["--requirepass", "s"], files({}))) == "s"
    acl = load(["/c"], files({"/c": "user alice on >a ~* +@all\nuser default on >d3f ~* +@all\n"}))
    assert default_user_password(acl) == "d3f"
    assert default_user_password(load([], files({}))) is None
