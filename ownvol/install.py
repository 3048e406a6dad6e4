"""`ownvol install`: ownvol on a host, from a built wheel, with its systemd units and environment file.

Layout under ROOT (`/` on a host, a scratch directory in tests):

    opt/ownvol/releases/<version>-<sha256 of the wheel, 12 hex>/   a virtual environment per wheel installed
    opt/ownvol/current -> releases/...                             the one the units run (swapped atomically)
    opt/ownvol/install.json                                        the directories the install created
    etc/systemd/system/ownvol-plugin.{socket,service}, ownvol-hook.service
    etc/ownvol/ownvol.env                                          settings (never overwritten once there)

An upgrade installs the new wheel beside the running one, swaps `current` and restarts the units; the
state (OWNVOL_ROOT, /var/lib/ownvol by default) is never touched here, by install or by uninstall.
systemd is only told (daemon-reload, enable, restart) when ROOT is `/` and systemd runs
(/run/systemd/system exists: sd_booted(3)).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click

UNITS = ("ownvol-plugin.socket", "ownvol-plugin.service", "ownvol-hook.service")
ENV_NAME = "ownvol.env"
# paths as written in the shipped units and environment file; rendered below ROOT
HOST_OPT = "/opt/ownvol"
HOST_ETC = "/etc/ownvol"
STATE_VARIABLES = ("OWNVOL_ROOT", "OWNVOL_HOOK_STATE", "OWNVOL_HOOK_DB")


class InstallError(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    """Where everything goes below root."""

    root: Path

    @property
    def opt(self) -> Path:
        return self.root / HOST_OPT.lstrip("/")

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def manifest(self) -> Path:
        return self.opt / "install.json"

    @property
    def etc(self) -> Path:
        return self.root / HOST_ETC.lstrip("/")

    @property
    def env_file(self) -> Path:
        return self.etc / ENV_NAME

    @property
    def env_example(self) -> Path:
        return self.etc / f"{ENV_NAME}.example"

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def on_host(self) -> bool:
        return self.root == Path("/")

    def render(self, text: str) -> str:
        """A shipped file with its /opt/ownvol and /etc/ownvol moved below root."""
        if self.on_host:
            return text
        return text.replace(HOST_OPT, str(self.opt)).replace(HOST_ETC, str(self.etc))

    def files(self) -> list[Path]:
        """Every file and link outside opt/ownvol that an install writes (the units, the environment files)."""
        return [*(self.unit_dir / unit for unit in UNITS), self.env_file, self.env_example]


def shipped(name: str) -> str:
    """A unit or the environment file as shipped in the package (packaging/systemd, installed as ownvol.systemd)."""
    return (resources.files("ownvol.systemd") / name).read_text(encoding="utf-8")


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 when /run/systemd/system is a directory."""
    return os.path.isdir("/run/systemd/system")


Echo = Callable[[str], None]


def install(wheel: str, root: str = "/", python: str | None = None, echo: Echo = print) -> Path:
    """Install wheel below root; returns the release directory now current.

    Raises InstallError for a file that is not an ownvol wheel, a failed venv or pip, a failed systemctl.
    """
    layout = Layout(Path(root).resolve())
    name = os.path.basename(wheel)
    if not (name.startswith("ownvol-") and name.endswith(".whl") and os.path.isfile(wheel)):
        raise InstallError(f"--wheel: {wheel!r} is not a built ownvol wheel (ownvol-VERSION-...whl; "
                           "`python -m build --wheel` makes one)")
    created = _make_dirs(layout, [layout.releases, layout.etc, layout.unit_dir])
    release = layout.releases / f"{name.split('-')[1]}-{_digest(wheel)}"
    if not (release / ".complete").exists():
        shutil.rmtree(release, ignore_errors=True)
        echo(f"installing {name} into {release}")
        interpreter: str = python or getattr(sys, "_base_executable", None) or sys.executable
        _run([interpreter, "-m", "venv", str(release)])
        _run([str(release / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              os.path.abspath(wheel)])
        (release / ".complete").write_text(name + "\n")
    previous = os.readlink(layout.current) if layout.current.is_symlink() else None
    link = layout.opt / ".current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(release.relative_to(layout.opt))
    os.replace(link, layout.current)
    echo(f"{layout.current} -> {release.name}" + (f" (was {os.path.basename(previous)})" if previous else ""))
    for unit in UNITS:
        if _write_if_changed(layout.unit_dir / unit, layout.render(shipped(unit)), 0o644):
            echo(f"wrote {layout.unit_dir / unit}")
    example = layout.render(shipped(ENV_NAME))
    if not layout.env_file.exists():
        _write_if_changed(layout.env_file, example, 0o600)
        echo(f"wrote {layout.env_file} (every setting, commented out: the defaults)")
    elif layout.env_file.read_text(encoding="utf-8") != example:
        if _write_if_changed(layout.env_example, example, 0o600):
            echo(f"kept {layout.env_file} as edited; this release's commented list is {layout.env_example}")
    _record(layout, created)
    _prune(layout, keep={release.name, os.path.basename(previous or "")}, echo=echo)
    _tell_systemd(layout, first=previous is None, echo=echo)
    return release


def uninstall(root: str = "/", echo: Echo = print) -> list[Path]:
    """Stop and remove what install put below root; returns what was removed. Volumes and state are kept.

    Raises InstallError when the environment file puts state inside opt/ownvol (it would go with it).
    """
    layout = Layout(Path(root).resolve())
    for variable, value in _env_values(layout.env_file).items():
        opt = next((p for p in (Path(HOST_OPT), layout.opt) if value and _inside(Path(value), p)), None)
        if variable in STATE_VARIABLES and opt:
            raise InstallError(f"{layout.env_file}: {variable}={value} is inside {opt}; move it before "
                               "uninstalling (nothing removed)")
    if layout.on_host and systemd_running():
        _systemctl(["disable", "--now", *reversed(UNITS)], echo)
    removed = []
    for path in layout.files():
        if path.exists() or path.is_symlink():
            path.unlink()
            removed.append(path)
    created = _recorded(layout)
    if layout.opt.exists():
        shutil.rmtree(layout.opt)
        removed.append(layout.opt)
    for directory in sorted({layout.etc, *created}, key=lambda p: len(p.parts), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            removed.append(directory)
    if layout.on_host and systemd_running():
        _systemctl(["daemon-reload"], echo)
    for path in removed:
        echo(f"removed {path}")
    echo("kept every volume and the state (OWNVOL_ROOT, /var/lib/ownvol by default)")
    return removed


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}")


def _systemctl(args: list[str], echo: Echo) -> None:
    echo(f"systemctl {' '.join(args)}")
    _run(["systemctl", *args])


def _make_dirs(layout: Layout, wanted: list[Path]) -> list[Path]:
    """Create wanted directories; those that did not exist (parents included), for uninstall to remove."""
    created = []
    for directory in wanted:
        missing = [p for p in (directory, *directory.parents) if not p.exists() and _inside(p, layout.root)]
        directory.mkdir(parents=True, exist_ok=True)
        created.extend(missing)
    return created


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _record(layout: Layout, created: list[Path]) -> None:
    dirs = sorted({*map(str, _recorded(layout)), *map(str, created)})
    _write_if_changed(layout.manifest, json.dumps({"created_dirs": dirs}, indent=1) + "\n", 0o644)


def _recorded(layout: Layout) -> list[Path]:
    try:
        return [Path(p) for p in json.loads(layout.manifest.read_text())["created_dirs"]]
    except (OSError, ValueError, KeyError):
        return []


def _write_if_changed(path: Path, text: str, mode: int) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)
    return True


def _prune(layout: Layout, keep: set[str], echo: Echo) -> None:
    """Remove every release but keep: the new one and the one before (a process not yet restarted runs it)."""
    for release in sorted(layout.releases.iterdir()):
        if release.name not in keep:
            shutil.rmtree(release)
            echo(f"removed the old release {release.name}")


def _env_values(path: Path) -> dict[str, str]:
    """VAR=value lines of a systemd EnvironmentFile (comments and blank lines skipped, quotes removed)."""
    values = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith(("#", ";")):
                values[key.strip()] = value.strip().strip("\"'")
    return values


def _tell_systemd(layout: Layout, first: bool, echo: Echo) -> None:
    if not layout.on_host:
        echo(f"installed below {layout.root}: systemd not told")
        return
    if not systemd_running():
        echo("systemd is not running here: the units are in place, nothing was started")
        return
    _systemctl(["daemon-reload"], echo)
    if first:
        _systemctl(["enable", "ownvol-plugin.service"], echo)
        _systemctl(["enable", "--now", "ownvol-plugin.socket", "ownvol-hook.service"], echo)
    else:
        _systemctl(["try-restart", "ownvol-plugin.service", "ownvol-hook.service"], echo)


@click.command("install")
@click.option("--wheel", type=click.Path(dir_okay=False), help="The built ownvol wheel (make install builds it).")
@click.option("--prefix", default="/", show_default=True, type=click.Path(file_okay=False),
              help="The root to install below; systemd is told only when it is /.")
@click.option("--uninstall", "remove", is_flag=True,
              help="Stop and remove the code, the units and the environment file; keep every volume and the state.")
@click.option("--python", default=None, help="The interpreter of the new environment (default: the one running this).")
def install_command(wheel: str | None, prefix: str, remove: bool, python: str | None) -> None:
    """Install ownvol on this host: /opt/ownvol, its systemd units, /etc/ownvol/ownvol.env (an upgrade keeps
    volumes, references, journal and settings)."""
    if prefix == "/" and os.geteuid() != 0:
        raise click.ClickException("ownvol install writes /opt, /etc and tells systemd: run it as root")
    try:
        if remove:
            uninstall(prefix, echo=click.echo)
        elif wheel is None:
            raise click.UsageError("--wheel: give the built wheel (`python -m build --wheel`, or `make install`)")
        else:
            install(wheel, prefix, python, echo=click.echo)
    except InstallError as exc:
        raise click.ClickException(str(exc)) from None
