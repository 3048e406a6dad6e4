"""The systemd units and the environment file `ownvol install` puts on a host (shipped in the wheel as ownvol.systemd)."""
