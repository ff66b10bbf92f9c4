"""Fixtures for ``tests/tls``: a fresh local PKI and a client-certificate CA per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_bastion.tls.certs import LocalPKI, ensure_local_pki

from .support import ClientCA


@pytest.fixture
def pki(tmp_path: Path) -> LocalPKI:
    return ensure_local_pki(tmp_path / "state", ["gateway.test"])


@pytest.fixture
def client_ca(tmp_path: Path) -> ClientCA:
    return ClientCA(tmp_path / "clients", "Example Corp client CA")


@pytest.fixture
def foreign_ca(tmp_path: Path) -> ClientCA:
    return ClientCA(tmp_path / "foreign", "Someone else's CA")
