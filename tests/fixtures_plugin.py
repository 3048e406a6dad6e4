"""Fixtures for the driver: owned by the driver work."""
