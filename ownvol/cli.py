"""The one `ownvol` command: a thin layer over the driver and the hook.

Each half is imported only when one of its commands runs, so `ownvol repair-mount` in the helper
container loads the core alone (no Flask, gunicorn, redis or docker).
"""

from __future__ import annotations

import importlib
import json
import sys

import click

# command name -> "module:attribute" of its click.Command
_COMMANDS: dict[str, str] = {
    "driver": "ownvol.driver.commands:driver_command",
    "plugin": "ownvol.driver.commands:plugin_alias",
    "volumes": "ownvol.driver.commands:volumes_command",
    "watch": "ownvol.hook.commands:watch",
    "status": "ownvol.hook.commands:status",
    "doctor": "ownvol.hook.commands:doctor",
    "repair": "ownvol.hook.commands:repair_cmd",
    "history": "ownvol.hook.commands:history",
    "explain": "ownvol.hook.commands:explain",
    "install": "ownvol.install:install_command",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they are looked up, not when the CLI starts."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="ownvol")
def main() -> None:
    """ownvol: volumes owned by the right user, and a hook that heals Redis when they are not."""


@main.command("repair-mount", hidden=True)
@click.argument("path")
@click.option("--uid", type=int, required=True)
@click.option("--gid", type=int, required=True)
@click.option("--modes", default="", help="octal modes the directory may have (0700,0750); the first is set otherwise")
def repair_mount(path: str, uid: int, gid: int, modes: str) -> None:
    """Inside the helper container: the core's symlink-safe repair of a server's data dir (its owner, and the modes
    that stop that owner: ownership.mode_for, repair's usable), its report as one JSON line (exit 2 on error);
    with OWNVOL_REPAIR_PROGRESS set, its progress on stderr as it goes."""
    import os

    from ownvol.ownership import PROGRESS_ENV, PROGRESS_LINE, OwnershipError, mode_to_set, repair

    def progress(walked: int, changed: int) -> None:
        click.echo(PROGRESS_LINE + json.dumps({"walked": walked, "changed": changed}), err=True)

    try:
        accepted = tuple(int(m, 8) for m in modes.split(",") if m)
    except ValueError:
        click.echo(json.dumps({"error": f"--modes {modes!r}: octal modes separated by commas (0700,0750)"}))
        sys.exit(2)
    try:
        report = repair(path, uid, gid, mode_to_set(path, accepted), usable=True,
                        progress=progress if os.environ.get(PROGRESS_ENV) else None).as_dict()
    except (OwnershipError, OSError) as exc:
        click.echo(json.dumps({"error": str(exc)}))
        sys.exit(2)
    click.echo(json.dumps(report))
