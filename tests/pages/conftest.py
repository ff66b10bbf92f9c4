"""Fixtures for the page tests."""

from __future__ import annotations

import pytest

from tests.pages.harness import Harness


@pytest.fixture
def harness() -> Harness:
    return Harness()
