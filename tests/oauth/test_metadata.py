"""RFC 9728 protected-resource metadata and its well-known URL (mcp_bastion.oauth.metadata)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.metadata import metadata_url_for, protected_resource_metadata

AS = "https://auth.example"


@pytest.mark.parametrize(
    ("resource", "url"),
    [
        pytest.param(
            "https://gw.example:8443/mcp/customers",
            "https://gw.example:8443/.well-known/oauth-protected-resource/mcp/customers",
            id="port-and-path",
        ),
        pytest.param("https://gw.example", "https://gw.example/.well-known/oauth-protected-resource", id="host-only"),
        pytest.param(
            "https://gw.example/", "https://gw.example/.well-known/oauth-protected-resource", id="root-slash-removed"
        ),
        pytest.param(
            "https://gw.example/mcp/",
            "https://gw.example/.well-known/oauth-protected-resource/mcp/",
            id="path-trailing-slash-kept",
        ),
        pytest.param(
            "https://gw.example/mcp?tenant=a",
            "https://gw.example/.well-known/oauth-protected-resource/mcp?tenant=a",
            id="query-kept",
        ),
        pytest.param(
            "http://127.0.0.1:8080/mcp",
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp",
            id="http-loopback",
        ),
        pytest.param(
            "http://[::1]:8080/mcp",
            "http://[::1]:8080/.well-known/oauth-protected-resource/mcp",
            id="http-ipv6-loopback",
        ),
    ],
)
def test_metadata_url_for(resource: str, url: str) -> None:
    assert metadata_url_for(resource) == url


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param("http://gw.example/mcp", id="http-public-host"),
        pytest.param("https://gw.example/mcp#frag", id="fragment"),
        pytest.param("https://gw.example/mcp#", id="empty-fragment"),
        pytest.param("https:///mcp", id="no-host"),
        pytest.param("/mcp", id="relative"),
        pytest.param("https://user@gw.example/mcp", id="userinfo"),
        pytest.param("https://gw.example:99999/mcp", id="bad-port"),
        pytest.param("ftp://gw.example/mcp", id="other-scheme"),
    ],
)
def test_bad_resource_refused(resource: str) -> None:
    with pytest.raises(ConfigError):
        metadata_url_for(resource)
    with pytest.raises(ConfigError):
        protected_resource_metadata(resource=resource, authorization_servers=[AS])


def test_document_has_rfc9728_fields() -> None:
    document = protected_resource_metadata(
        resource="https://gw.example/mcp",
        authorization_servers=[AS],
        scopes_supported=["tools:call", "files:read"],
        resource_name="Customer tools",
    )
    assert document == {
        "resource": "https://gw.example/mcp",
        "authorization_servers": [AS],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["tools:call", "files:read"],
        "resource_name": "Customer tools",
    }


def test_optional_fields_left_out() -> None:
    document = protected_resource_metadata(resource="https://gw.example/mcp", authorization_servers=[AS])
    assert document == {
        "resource": "https://gw.example/mcp",
        "authorization_servers": [AS],
        "bearer_methods_supported": ["header"],
    }


@pytest.mark.parametrize(
    ("servers", "scopes"),
    [
        pytest.param([], (), id="no-authorization-server"),
        pytest.param("https://auth.example", (), id="servers-as-string"),
        pytest.param(["http://auth.example"], (), id="http-authorization-server"),
        pytest.param([AS], ["two words"], id="scope-with-space"),
        pytest.param([AS], ['a"b'], id="scope-with-quote"),
        pytest.param([AS], [""], id="empty-scope"),
        pytest.param([AS], "read", id="scopes-as-string"),
    ],
)
def test_bad_document_inputs_refused(servers: Sequence[str], scopes: Sequence[str]) -> None:
    with pytest.raises(ConfigError):
        protected_resource_metadata(
            resource="https://gw.example/mcp", authorization_servers=servers, scopes_supported=scopes
        )
