"""The systemd units and the environment file `ownvol install` puts on a host (in the wheel: ownvol.systemd)."""
