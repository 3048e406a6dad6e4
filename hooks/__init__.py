"""The ownvol hook: watch Redis containers, detect persistence failures, recover, verify."""
