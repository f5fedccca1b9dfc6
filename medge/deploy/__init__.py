"""The device side: `doctor` (what this machine can run) and `deploy` (a bundle and an app as a service over SSH)."""
