"""Fixtures for the hook: owned by the hook work."""
