"""Redis's (and Valkey's) configuration as the server itself reads it, from files and its command line.

The rules are Redis's own (src/config.c `loadServerConfig`, `loadServerConfigFromString`; src/sds.c
`sdssplitargs`; src/server.c `main`), the same in Redis 6.2 to 8.2 and Valkey 8:
- `redis-server [CONFIGFILE] [--name value ...]`: a first argument not starting with `--` names the config
  file (`-` is stdin); every `--name` starts a directive, the following arguments are its values; these
  directives are appended after the file's, so they override it.
- each line is trimmed; blank lines and lines starting with `#` are skipped; the name is case-insensitive;
  values are split like a shell would, with "double quotes" (escapes \\n \\r \\t \\b \\a \\\\ \\" \\xHH) and
  'single quotes' (only \\' escaped); a closing quote must be followed by a space or the end of the line.
- `include PATH` reads PATH at that point (a glob since Redis 7.0, matches in sorted order);
- a later directive wins; `dir` changes the working directory while reading (a relative `dir` or
  `include` is relative to the directory the previous `dir` left).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULTS = {"port": "6379", "dir": None, "appenddirname": "appendonlydir", "dbfilename": "dump.rdb",
            "appendfilename": "appendonly.aof", "appendonly": "no", "bind": None, "unixsocket": None,
            "requirepass": None, "aclfile": None}
MAX_INCLUDE_DEPTH = 16  # Redis has none; a loop of includes would make it recurse until it crashes


class ConfigSyntaxError(ValueError):
    """A line Redis itself would refuse ("Unbalanced quotes in configuration line"). The message never
    quotes the line: it may hold a password."""


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}


def split_args(line: str) -> list[str]:
    """A config line split into arguments as sdssplitargs does; ConfigSyntaxError for unbalanced quotes."""
    args: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return args
        current, quote = [], None
        while i < n:
            c = line[i]
            if quote:
                if quote == '"' and c == "\\" and i + 3 < n and line[i + 1] == "x" and _is_hex(line[i + 2:i + 4]):
                    current.append(chr(int(line[i + 2:i + 4], 16)))
                    i += 3
                elif c == "\\" and i + 1 < n and (quote == '"' or line[i + 1] == "'"):
                    current.append(_ESCAPES.get(line[i + 1], line[i + 1]) if quote == '"' else "'")
                    i += 1
                elif c == quote:
                    if i + 1 < n and not line[i + 1].isspace():
                        raise ConfigSyntaxError("a closing quote must be followed by a space")
                    quote = None
                    i += 1
                    break
                else:
                    current.append(c)
            elif c.isspace():
                break
            elif c in "\"'":
                quote = c
            else:
                current.append(c)
            i += 1
        if quote:
            raise ConfigSyntaxError("unbalanced quotes")
        args.append("".join(current))


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


@dataclass(frozen=True)
class Directive:
    name: str  # lower case
    args: tuple[str, ...]
    origin: str  # "PATH:LINE" or "command line"


def command_line(argv: list[str]) -> tuple[str | None, list[Directive]]:
    """(config file or None, the command line's directives) of `redis-server ARGS` (argv without the program).

    Source: src/server.c main(): argv[1] is the config file unless it starts with "--"; then each "--name"
    begins a directive and other arguments are its values (Redis 7 also accepts a value starting with "--"
    only right after an option name that takes one; ownvol reads it as a value there too). `--sentinel`
    is Sentinel mode's flag, not a directive.
    """
    config_file = None
    rest = list(argv)
    if rest and not rest[0].startswith("--"):
        config_file = rest.pop(0)
    directives: list[Directive] = []
    name: str | None = None
    values: list[str] = []
    for arg in rest:
        if arg == "--sentinel":  # Sentinel mode's flag (src/server.c checkForSentinelMode): never takes a value
            if name is not None:
                directives.append(Directive(name, tuple(values), "command line"))
            name, values = None, []
            continue
        if arg.startswith("--") and len(arg) > 2 and (name is None or values):
            if name is not None:
                directives.append(Directive(name, tuple(values), "command line"))
            name, values = arg[2:].lower(), []
        elif name is not None:
            values.append(arg)
    if name is not None:
        directives.append(Directive(name, tuple(values), "command line"))
    return config_file, directives


FileReader = Callable[[str], "str | None"]
DirLister = Callable[[str], "list[str] | None"]


@dataclass
class RedisConfig:
    """The settings Redis would end with; `origins` says for each where its winning value came from."""
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dir: str = "/"

    def get(self, name: str) -> str | None:
        """The first value of the winning directive, else Redis's default (None when it has none)."""
        args = self.values.get(name)
        return args[0] if args else DEFAULTS.get(name)

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")


def load(argv: list[str], read_file: FileReader, cwd: str = "/", list_dir: DirLister | None = None) -> RedisConfig:
    """The configuration `redis-server ARGV` started in cwd ends with, its files read through read_file
    (a path inside the container -> its text, None when it cannot be read). A file Redis could not read
    makes it exit at start: it is named in `problems`, and what the command line says still counts."""
    config_file, options = command_line(argv)
    config = RedisConfig(dir=cwd)
    if config_file and config_file != "-":
        _load_file(config, config_file, read_file, list_dir, 0)
    elif config_file == "-":
        config.problems.append("configuration read from stdin: not known to ownvol")
    for directive in options:
        _apply(config, directive, read_file, list_dir, 0)
    return config


def _load_file(config: RedisConfig, path: str, read_file: FileReader, list_dir: DirLister | None,
               depth: int) -> None:
    path = posixpath.normpath(posixpath.join(config.dir, path))
    text = read_file(path)
    if text is None:
        config.problems.append(f"cannot read config file {path}")
        return
    config.files.append(path)
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r\n")
        if not line or line.startswith("#"):
            continue
        try:
            args = split_args(line)
        except ConfigSyntaxError as exc:
            config.problems.append(f"{path}:{number}: {exc}")
            continue
        if args:
            _apply(config, Directive(args[0].lower(), tuple(args[1:]), f"{path}:{number}"), read_file, list_dir,
                   depth)


def _apply(config: RedisConfig, directive: Directive, read_file: FileReader, list_dir: DirLister | None,
           depth: int) -> None:
    if directive.name == "include" and directive.args:
        if depth >= MAX_INCLUDE_DEPTH:
            config.problems.append(f"{directive.origin}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
            return
        for path in _expand(config, directive.args[0], list_dir):
            _load_file(config, path, read_file, list_dir, depth + 1)
        return
    if directive.name == "dir" and directive.args:
        config.dir = posixpath.normpath(posixpath.join(config.dir, directive.args[0]))
        config.values["dir"] = (config.dir,)
        config.origins["dir"] = directive.origin
        return
    key = f"user {directive.args[0]}" if directive.name == "user" and directive.args else directive.name
    config.values[key] = directive.args
    config.origins[key] = directive.origin


def _expand(config: RedisConfig, pattern: str, list_dir: DirLister | None) -> list[str]:
    if not any(c in pattern for c in "*?["):
        return [pattern]
    absolute = posixpath.normpath(posixpath.join(config.dir, pattern))
    directory, leaf = posixpath.split(absolute)
    names = list_dir(directory) if list_dir else None
    if names is None:
        config.problems.append(f"cannot list {directory} for include {pattern}")
        return []
    return [posixpath.join(directory, n) for n in sorted(names) if fnmatch.fnmatchcase(n, leaf)]


def default_user_password(config: RedisConfig) -> str | None:
    """`requirepass`, else the first `>password` of a `user default` line (ACL); None when neither is set."""
    if config.get("requirepass"):
        return config.get("requirepass")
    for rule in config.values.get("user default", ())[1:]:
        if rule.startswith(">"):
            return rule[1:]
    return None
