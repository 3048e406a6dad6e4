"""The driver's commands: `ownvol driver` serves the volume driver in the foreground (`ownvol plugin`, its
former name, is a hidden alias); `ownvol volumes` shows its volumes and references."""

from __future__ import annotations

import json

import click

from ownvol.dockertime import ago, state_time

from .settings import SettingsError, from_env


@click.command("driver")
def driver_command() -> None:
    """Serve the ownvol volume driver on its unix socket, or on one systemd passed (settings: OWNVOL_* variables)."""
    from .activation import ActivationError
    from .serve import AlreadyServing, serve

    try:
        settings = from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        serve(settings)
    except (AlreadyServing, ActivationError) as exc:
        raise click.ClickException(str(exc)) from None


def _call(socket_path: str, endpoint: str, body: dict) -> dict:
    """One request to the driver's socket; ClickException with the driver's Err or why it could not be asked."""
    from .serve import UnixHTTPConnection

    conn = UnixHTTPConnection(socket_path, timeout=120)
    try:
        conn.request("POST", endpoint, body=json.dumps(body).encode())
        reply = json.loads(conn.getresponse().read() or b"{}")
    except OSError as exc:
        raise click.ClickException(f"cannot reach the driver on {socket_path}: {exc} (--socket?)") from None
    finally:
        conn.close()
    if reply.get("Err"):
        raise click.ClickException(reply["Err"])
    return reply


def _age(stamp: str | None) -> str:
    return ago(state_time(stamp)) or "-"


def _default_socket() -> str:
    try:
        return from_env().socket
    except SettingsError:
        return "/run/docker/plugins/ownvol.sock"


@click.command("volumes")
@click.option("--socket", "socket_path", default=_default_socket, show_default="the driver's, from OWNVOL_*",
              help="The driver's socket (a managed plugin's: /run/docker/plugins/<plugin id>/ownvol.sock).")
@click.option("--release", metavar="NAME", help="Forget every mount reference of NAME (refused while a container "
                                                "really uses it).")
@click.option("--rebind", metavar="NAME", help="Take the directory now at NAME's path as its data (it moved).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of the table.")
def volumes_command(socket_path: str, release: str | None, rebind: str | None, yes: bool, as_json: bool) -> None:
    """The driver's volumes with their mount references, each reference's age, and whether a live mount
    stands for them (live: the mount namespaces that hold the volume; unknown: the driver cannot see them)."""
    if release and rebind:
        raise click.UsageError("--release and --rebind are separate actions: give one")
    actions = {
        "/Ownvol.Release": (release, "Forget every mount reference of {}? Docker will no longer be refused its "
                                     "removal; the driver checks first that no container holds it",
                            lambda reply: f"released {reply['Released']} mount ID(s)"),
        "/Ownvol.Rebind": (rebind, "Take the directory now at {}'s path as its data? Only if you moved it there "
                                   "on purpose", lambda reply: f"data is now {reply['Data']}"),
    }
    for endpoint, (name, question, said) in actions.items():
        if name:
            if not yes:
                click.confirm(question.format(name), abort=True)
            click.echo(f"{name}: {said(_call(socket_path, endpoint, {'Name': name}))}")
            return
    volumes = _call(socket_path, "/Ownvol.References", {})["Volumes"]
    if as_json:
        click.echo(json.dumps(volumes, indent=2))
        return
    click.echo(f"{'VOLUME':<24} {'REFS':>4}  {'OLDEST':>6}  {'LIVE':<40} {'OWNERSHIP':<9} STATE")
    for v in volumes:
        refs = v["references"]
        live = "unknown" if v["live"] is None else ("; ".join(v["live"]) or "no mount holds it")
        if not refs:
            live = "-"
        oldest = _age(min((r["since"] for r in refs), default=None))
        click.echo(f"{v['name']:<24} {sum(r['count'] for r in refs):>4}  {oldest:>6}  {live:<40} "
                   f"{v.get('ownership', 'walk'):<9} {v['state']}")
        if v.get("view_of"):
            click.echo(f"  a view of {v['view_of']}")
        if v.get("ownership_note", "").startswith("auto fell back"):
            click.echo(f"  {v['ownership_note']}")
        for r in refs:
            click.echo(f"  {r['id'][:20]:<22} x{r['count']}  since {r['since']} ({_age(r['since'])}), "
                       f"last {_age(r['last'])} ago, epoch {r['epoch']}")


# `ownvol plugin`, the driver command's name before round three: kept for units and scripts that still say it.
plugin_alias = click.Command("plugin", callback=driver_command.callback, hidden=True,
                             help="The former name of `ownvol driver`.")

commands: list[click.Command] = [driver_command, plugin_alias, volumes_command]
