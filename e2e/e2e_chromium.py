"""Debian's Chromium for the e2e UI checks, installed on first use.

``uv run pytest e2e`` must pass on a fresh machine with nothing but Python: when no Chromium is found,
the suite installs Debian's ``chromium`` package itself (``apt-get``, through ``sudo -n`` when not
root). When it cannot, it fails with the exact command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class ChromiumMissing(RuntimeError):
    """No Chromium, and no way to install one from here."""


def _how_to_install(path: str) -> str:
    return (
        f"Chromium was not found at {path} nor on PATH. Install Debian's package:\n"
        "    sudo apt-get update && sudo apt-get install -y chromium\n"
        "or point TEMPORAL_AIRFLOW_E2E_CHROMIUM at a Chromium binary."
    )


def install_commands(search_path: str | None = None) -> list[list[str]] | None:
    """The commands that install Debian's chromium here, or ``None`` when there is no way to."""
    apt_get = shutil.which("apt-get", path=search_path)
    if apt_get is None:
        return None
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo", path=search_path)
        if sudo is None:
            return None
        prefix = [sudo, "-n"]  # never wait for a password: fail, and say what to run
    return [[*prefix, apt_get, "update", "-qq"], [*prefix, apt_get, "install", "-y", "-qq", "chromium"]]


def find_chromium(path: str, search_path: str | None = None) -> str | None:
    if Path(path).exists():
        return path
    return shutil.which("chromium", path=search_path)


def ensure_chromium(path: str, search_path: str | None = None) -> str:
    """The Chromium binary to drive: ``path``, else ``chromium`` on PATH, else freshly installed."""
    found = find_chromium(path, search_path)
    if found:
        return found
    commands = install_commands(search_path)
    if commands is None:
        raise ChromiumMissing(_how_to_install(path))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in commands:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-2000:]
            raise ChromiumMissing(f"`{' '.join(command)}` failed:\n{output}\n{_how_to_install(path)}")
    found = find_chromium(path, search_path)
    if not found:
        raise ChromiumMissing(_how_to_install(path))
    return found
