"""Scope strings (RFC 6749 §3.3): a space-delimited list of case-sensitive scope tokens.

``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``; the order means nothing, so scopes travel as sets and
are written out sorted, which makes every scope string we emit canonical.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from mcp_bastion.oauth.refusal import Refusal

SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
MAX_SCOPE_LENGTH: Final = 2000


def parse(value: str | None, *, error: str = "invalid_scope") -> frozenset[str]:
    """The scope tokens of ``value`` (empty for None or ""). Raises ``Refusal`` with ``error`` when malformed.

    Only single spaces separate tokens in the grammar; runs of spaces are tolerated, other whitespace is not.
    """
    if not value:
        return frozenset()
    if len(value) > MAX_SCOPE_LENGTH:
        raise Refusal(error, "scope_malformed", "scope is too long")
    tokens = [token for token in value.split(" ") if token]
    if not all(SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise Refusal(error, "scope_malformed", "scope is not a list of scope tokens")
    return frozenset(tokens)


def render(scopes: Iterable[str]) -> str:
    """The canonical scope string: sorted, single spaces."""
    return " ".join(sorted(set(scopes)))
