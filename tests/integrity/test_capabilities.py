"""``integrity.capabilities``: a list_changed the server said it would not send is flagged."""

from __future__ import annotations

from mcp_bastion.integrity.capabilities import Promises, family_of


def test_family_of_knows_only_the_three_list_notifications() -> None:
    assert family_of("notifications/tools/list_changed") == "tools"
    assert family_of("notifications/resources/list_changed") == "resources"
    assert family_of("notifications/roots/list_changed") is None  # a client's, not a server's list
    assert family_of("notifications/tools/list_changed/x") is None
    assert family_of("tools/list") is None


def test_an_undeclared_list_changed_is_flagged() -> None:
    promises = Promises()
    promises.learn("s", {"capabilities": {"tools": {"listChanged": False}, "prompts": {}}})
    assert promises.broken("s", "notifications/tools/list_changed") == "tools"
    assert promises.broken("s", "notifications/prompts/list_changed") == "prompts"
    assert promises.broken("s", "notifications/resources/list_changed") == "resources"  # no capability at all


def test_a_declared_list_changed_passes() -> None:
    promises = Promises()
    promises.learn("s", {"capabilities": {"tools": {"listChanged": True}}})
    assert promises.broken("s", "notifications/tools/list_changed") is None
    promises.learn("s", {"capabilities": {"tools": {}}})  # a later answer cannot withdraw the promise
    assert promises.broken("s", "notifications/tools/list_changed") is None


def test_no_verdict_before_the_declaration_was_seen() -> None:
    promises = Promises()
    assert promises.broken("s", "notifications/tools/list_changed") is None
    promises.learn("other", {"capabilities": {}})
    assert promises.broken("s", "notifications/tools/list_changed") is None
    promises.learn("s", {"capabilities": "not an object"})
    assert promises.broken("s", "notifications/tools/list_changed") is None
