"""`ownvol plugin`: the volume driver in the foreground."""

import click

from ownvol.driver.settings import SettingsError, from_env


@click.command("plugin")
def plugin_command() -> None:
    """Serve the ownvol volume driver on its unix socket, or on one systemd passed (settings: OWNVOL_* variables)."""
    from ownvol.driver.activation import ActivationError
    from ownvol.driver.serve import AlreadyServing, serve

    try:
        settings = from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        serve(settings)
    except (AlreadyServing, ActivationError) as exc:
        raise click.ClickException(str(exc)) from None


commands: list[click.Command] = [plugin_command]
