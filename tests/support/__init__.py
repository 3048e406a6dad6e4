"""What the tests share: engines, plugins, hooks, names, ports and cleanup (no test here)."""
