"""The one `ownvol` command: a thin layer over the driver and the hook."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="ownvol")
def main() -> None:
    """ownvol: volumes owned by the right user, and a hook that heals Redis when they are not."""


def _register() -> None:
    from hooks.cli import commands as hook_commands
    from plugin.cli import commands as plugin_commands

    for command in (*plugin_commands, *hook_commands):
        main.add_command(command)


_register()
