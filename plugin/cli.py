"""`ownvol plugin`: filled in by the driver."""

import click

commands: list[click.Command] = []
