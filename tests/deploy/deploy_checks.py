"""Helpers for the deploy/doctor tests (not in conftest.py: a test module named `conftest` would be
whichever test folder's conftest was imported first)."""

from __future__ import annotations

def ssh_args(server) -> list[str]:
    """--device and the SSH options for the test server (the remote medge is this installation's)."""
    return ["--device", server.url, "--ssh-key", str(server.key), "--ssh-option", f"UserKnownHostsFile={server.known_hosts}",
            "--remote-medge", server.medge]
