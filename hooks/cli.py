"""`ownvol watch | status | doctor | repair | history`: filled in by the hook."""

import click

commands: list[click.Command] = []
