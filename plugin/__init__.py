"""The ownvol volume driver: Docker's volume-plugin protocol over a unix socket."""
