"""The ownvol hook: watch Redis, Valkey, PostgreSQL and MariaDB containers, detect their persistence failures,
recover, verify."""
