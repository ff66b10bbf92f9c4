"""``asgi.namespace``: name splitting, resource routing, merged capabilities, and the aggregate settings
that enable it (the whole endpoint is tested end to end in ``tests/e2e/test_aggregate.py``)."""

from __future__ import annotations

import pytest

from mcp_bastion.asgi.namespace import ResourceRoutes, merge_capabilities, qualify, split
from mcp_bastion.errors import ConfigError, InvalidArguments, MalformedRequest
from mcp_bastion.jsonrpc.message import JSONObject
from mcp_bastion.settings import parse_settings

SERVERS = ("mail", "docs")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("mail.send_email", ("mail", "send_email"), id="plain"),
        pytest.param("docs.v2.search", ("docs", "v2.search"), id="dots-in-the-tool-name"),
        pytest.param(qualify("docs", "a.b.c"), ("docs", "a.b.c"), id="round-trip"),
    ],
)
def test_the_first_dot_splits_a_name(name: str, expected: tuple[str, str]) -> None:
    assert split(name, SERVERS) == expected


@pytest.mark.parametrize("name", ["nowhere.search", "search", "mail.", ".search", "MAIL.search"])
def test_a_name_without_a_member_prefix_is_invalid_params(name: str) -> None:
    with pytest.raises(InvalidArguments) as refused:
        split(name, SERVERS)
    assert refused.value.reason == "server_unknown"


@pytest.mark.parametrize("name", [None, "", 7])
def test_a_missing_name_is_malformed(name: object) -> None:
    with pytest.raises(MalformedRequest):
        split(name, SERVERS)  # type: ignore[arg-type]


def test_resources_route_by_listing_then_by_the_longest_template_prefix() -> None:
    routes = ResourceRoutes()
    routes.learn("mail", uris=["mail://inbox"], templates=["mail://messages/{id}"])
    routes.learn("docs", uris=["docs://readme"], templates=["mail://messages/archive/{id}", "{+anything}"])
    assert routes.claimants("mail://inbox") == {"mail"}
    assert routes.claimants("mail://messages/7") == {"mail"}
    assert routes.claimants("mail://messages/archive/7") == {"docs"}  # the longer prefix is more specific
    assert routes.claimants("file:///etc/passwd") == set()  # a template without a scheme claims nothing


def test_a_uri_two_members_list_is_claimed_by_both() -> None:
    routes = ResourceRoutes()
    routes.learn("mail", uris=["shared://x"])
    routes.learn("docs", uris=["shared://x"])
    assert routes.claimants("shared://x") == {"mail", "docs"}


def test_capabilities_are_merged_without_notification_options() -> None:
    members: list[JSONObject] = [
        {"tools": {"listChanged": True}, "logging": {}},
        {"prompts": {"listChanged": True}, "resources": {"subscribe": True}, "completions": {}},
    ]
    assert merge_capabilities(members) == {"tools": {}, "prompts": {}, "resources": {}, "completions": {}}


def settings(**aggregate: object) -> dict[str, object]:
    up = {"url": "https://up.internal/mcp"}
    return {"upstreams": {"mail": up, "docs": up}, "aggregate": aggregate}


def test_the_aggregate_is_off_unless_enabled_with_named_servers() -> None:
    assert not parse_settings(settings()).aggregate.enabled
    assert parse_settings(settings(enabled=True, servers=["docs", "mail"])).aggregate.servers == ("docs", "mail")


@pytest.mark.parametrize(
    ("aggregate", "problem"),
    [
        pytest.param({"enabled": True}, "needs aggregate.servers", id="no-servers"),
        pytest.param({"enabled": True, "servers": ["mail", "crm"]}, "unknown upstreams", id="unknown-server"),
        pytest.param({"enabled": True, "servers": ["mail", "mail"]}, "unique", id="twice"),
        pytest.param({"enabled": True, "servers": ["mail"], "typo": 1}, "typo", id="typo"),
    ],
)
def test_bad_aggregate_settings_stop_startup(aggregate: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_settings(settings(**aggregate))


def test_an_upstream_name_with_a_dot_is_refused() -> None:
    with pytest.raises(ConfigError, match="upstreams"):
        parse_settings({"upstreams": {"mail.v2": {"url": "https://up.internal/mcp"}}})
