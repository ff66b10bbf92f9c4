"""``mcp-bastion keys``: rotation seen by tokens minted before and after, and a leaked key revoked."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import anyio
import orjson
import pytest
from typer.testing import CliRunner

from mcp_bastion.cli.main import app
from mcp_bastion.errors import Unauthenticated
from tests.cli.test_commands import config, verify_with_ring

AUDIENCE = "https://127.0.0.1:9443/mcp/customers"


def header_of(token: str) -> dict[str, object]:
    segment = token.split(".")[0]
    header: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return header


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def mint(path: Path) -> str:
    return run("token", "-c", str(path), "--sub", "alice", "--server", "customers").strip()


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(tmp_path: Path) -> None:
    path = config(tmp_path)
    before = mint(path)
    assert "current" in run("keys", "list", "-c", str(path))
    rotated = run("keys", "rotate", "-c", str(path))
    new_kid = re.search(r"new signing key (\S+)", rotated)
    assert new_kid, rotated
    assert "stay in the JWKS" in rotated
    after = mint(path)
    assert header_of(after)["kid"] == new_kid.group(1) != header_of(before)["kid"]
    listing = run("keys", "list", "-c", str(path))
    assert listing.count("│ retired") == 1, listing
    assert listing.count("│ current") == 1, listing
    for token in (before, after):
        assert anyio.run(verify_with_ring, tmp_path, token, AUDIENCE).subject == "alice"


def test_revoking_a_leaked_key_refuses_its_tokens(tmp_path: Path) -> None:
    path = config(tmp_path)
    leaked = mint(path)
    assert "previous keys deleted" in run("keys", "rotate", "--revoke-previous", "-c", str(path))
    with pytest.raises(Unauthenticated) as refused:
        anyio.run(verify_with_ring, tmp_path, leaked, AUDIENCE)
    assert refused.value.reason == "token_key_unknown"
    assert anyio.run(verify_with_ring, tmp_path, mint(path), AUDIENCE).subject == "alice"
