"""Secret references in settings: ``env:NAME`` and ``file:/path`` instead of literal secrets in the TOML.

A literal value is accepted too (some operators template their config), but a reference keeps the secret
out of the file that is most often copied, diffed and pasted into tickets. ``vault:path#key`` arrives with
the vault.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import read_private

MAX_SECRET_BYTES = 4096


def resolve_reference(value: str, setting: str) -> str:
    """The secret ``value`` refers to; ``ConfigError`` naming ``setting`` when it cannot be read."""
    if value.startswith("env:"):
        name = value[4:]
        secret = os.environ.get(name)
        if not secret:
            raise ConfigError(f"{setting}: environment variable {name!r} is not set")
        return secret
    if value.startswith("file:"):
        data = read_private(Path(value[5:]), f"{setting} file", max_bytes=MAX_SECRET_BYTES)
        return data.decode("utf-8").strip()
    return value
