"""The error tree drawn in ``errors``' docstring is the real class tree, and every class has stable data."""

from __future__ import annotations

import re

import pytest

from mcp_bastion import errors
from mcp_bastion.errors import BastionError


def _drawn_tree() -> dict[str, str | None]:
    """Class name -> parent name, read from the docstring's box drawing (4 columns per level)."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        match = re.match(r"^    ((?:│   |    )*)(?:├── |└── )?([A-Z]\w+)", line)
        if not match or not re.search(r"[├└]|^    BastionError", line):
            continue
        depth = len(match.group(1)) // 4 + (1 if re.search(r"[├└]", line) else 0)
        name = match.group(2)
        del stack[depth:]
        parents[name] = stack[-1] if stack else None
        stack.append(name)
    return parents


def _real_tree() -> dict[str, str | None]:
    found: dict[str, str | None] = {"BastionError": None}

    def walk(cls: type[BastionError]) -> None:
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__:
                found[sub.__name__] = cls.__name__
                walk(sub)

    walk(BastionError)
    return found


def test_docstring_tree_matches_the_classes() -> None:
    assert _drawn_tree() == _real_tree()


@pytest.mark.parametrize(
    "cls", [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, BastionError)]
)
def test_stable_class_data(cls: type[BastionError]) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.reason)
    assert 200 <= cls.http_status <= 599
    assert cls.public_message
    error = cls("secret detail that must stay server-side")
    assert "secret" not in error.public_message
    assert error.public_reason == error.reason or isinstance(error, errors.SessionRejected)
