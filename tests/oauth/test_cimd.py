"""Client ID Metadata Documents fetched from a real HTTPS server on loopback (trustme certificate): the URL
rules, the SSRF guard, no redirects, size and time limits, JSON only, the document rules, and caching."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import pytest
import trustme
from aiohttp import web
from joserfc.jwk import ECKey

from mcp_bastion import netguard
from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth import cimd
from mcp_bastion.oauth.cimd import ClientMetadataResolver
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.server import MetadataDocuments
from mcp_bastion.oauth.service import OAuthError
from tests.test_netguard import Served, serve

pytestmark = pytest.mark.anyio

BOUND = 10.0
NOW = 1_800_000_000.0
KNOWN = frozenset({"customers:read", "customers:write"})
SECRET_MARKER = "do-not-echo-this-body"
LOOPBACK = netguard.Policy(allow_loopback=True)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


Reply = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]


@dataclass
class World:
    served: Served
    base: str
    """``https://localhost:PORT``"""
    clock: Clock
    resolver: ClientMetadataResolver

    @property
    def url(self) -> str:
        return f"{self.base}/client.json"


def document(url: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_id": url,
        "client_name": "Example MCP Client",
        "redirect_uris": ["http://127.0.0.1/callback", "https://app.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "customers:read",
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not None}


def json_reply(body: object, *, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


async def valid(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return json_reply(document(url))


@asynccontextmanager
async def world(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    reply: Reply = valid,
    *,
    host: str = "localhost",
    policy: netguard.Policy = LOOPBACK,
    **options: Any,
) -> AsyncIterator[World]:
    """A TLS server answering ``reply`` and a resolver trusting its CA, bounded in time."""
    base: list[str] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return await reply(request, f"{base[0]}{request.path_qs}")

    clock = Clock()
    with anyio.fail_after(BOUND):
        async with serve(handler, ssl_context=server_context) as served:
            base.append(f"https://{host}:{served.port}")
            resolver = ClientMetadataResolver(
                policy, known_scopes=KNOWN, ssl_context=client_context, clock=clock, **options
            )
            try:
                yield World(served, base[0], clock, resolver)
            finally:
                await resolver.aclose()


async def refused(resolver: ClientMetadataResolver, client_id: str) -> Refusal:
    with pytest.raises(OAuthError) as caught:
        await resolver.resolve(client_id)
    assert caught.value.error == "invalid_client"
    assert isinstance(caught.value, Refusal)
    assert SECRET_MARKER not in str(caught.value)
    return caught.value


# -- the happy path and the cache ------------------------------------------------------------------------


async def test_valid_document_is_accepted_and_cached(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with world(server_context, client_context) as w:
        record = await w.resolver.resolve(w.url)
        again = await w.resolver.resolve(w.url)
        fetched = await w.resolver.fetch(w.url)
    assert (record.client_id, record.kind, record.secret_hash) == (w.url, "metadata", None)
    assert record.auth_method == "none"
    assert record.redirect_uris == ("http://127.0.0.1/callback", "https://app.example/cb")
    assert record.scopes == frozenset({"customers:read"})
    assert record.name == "Example MCP Client"
    assert (record.created_at, record.expires_at) == (NOW, NOW + 300)  # no Cache-Control: cache_seconds
    assert again is record
    assert fetched["client_id"] == w.url
    assert w.served.connections == 1
    assert w.served.paths == ["/client.json"]
    headers = w.served.requests[0][1]
    assert headers["Accept"] == "application/json"
    assert headers["Accept-Encoding"] == "identity"
    assert headers["Host"] == f"localhost:{w.served.port}"  # the original name, though we connected by IP
    assert "Cookie" not in headers


async def test_cache_expires_and_is_fetched_again(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def max_age(request: web.BaseRequest, url: str) -> web.StreamResponse:
        return json_reply(document(url), headers={"Cache-Control": "public, max-age=120"})

    async with world(server_context, client_context, max_age) as w:
        first = await w.resolver.resolve(w.url)
        w.clock.now += 119
        assert await w.resolver.resolve(w.url) is first
        w.clock.now += 1
        second = await w.resolver.resolve(w.url)
    assert first.expires_at == NOW + 120
    assert second.expires_at == NOW + 240
    assert w.served.paths == ["/client.json", "/client.json"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("", 300.0, id="none-default"),
        pytest.param("max-age=120", 120.0, id="max-age"),
        pytest.param('public, MAX-AGE="600"', 600.0, id="quoted-and-cased"),
        pytest.param("max-age=5", 60.0, id="below-minimum"),
        pytest.param("max-age=999999999", 86400.0, id="above-maximum"),
        pytest.param("no-store", 60.0, id="no-store-minimum"),
        pytest.param("no-cache, max-age=600", 60.0, id="no-cache-wins"),
        pytest.param("max-age=-1", 300.0, id="invalid-default"),
        pytest.param("max-age=1e9", 300.0, id="not-digits-default"),
    ],
)
def test_cache_lifetime(header: str, expected: float) -> None:
    assert cimd.cache_lifetime(header, default=300.0, minimum=60.0, maximum=86400.0) == expected


async def test_concurrent_resolutions_share_one_fetch(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    release = asyncio.Event()

    async def gated(request: web.BaseRequest, url: str) -> web.StreamResponse:
        await release.wait()
        return json_reply(document(url))

    async with world(server_context, client_context, gated) as w:
        tasks = [asyncio.ensure_future(w.resolver.resolve(w.url)) for _ in range(5)]
        while not w.served.requests:
            await asyncio.sleep(0)  # yield until the one request has arrived
        release.set()
        records = await asyncio.gather(*tasks)
    assert all(record is records[0] for record in records)
    assert w.served.connections == 1
    assert w.served.paths == ["/client.json"]


# -- the URL rules (§3): refused without any I/O -------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "reason"),
    [
        pytest.param("http://app.example/client.json", "client_id_not_https", id="http"),
        pytest.param("HTTPS://app.example/client.json", "client_id_not_https", id="scheme-case"),
        pytest.param("app.example/client.json", "client_id_not_https", id="no-scheme"),
        pytest.param("https://app.example", "client_id_no_path", id="no-path"),
        pytest.param("https://app.example?x=1", "client_id_no_path", id="query-no-path"),
        pytest.param("https://app.example/", "client_id_no_path", id="root-path"),
        pytest.param("https://app.example/client.json#x", "client_id_fragment", id="fragment"),
        pytest.param("https://app.example/client.json#", "client_id_fragment", id="empty-fragment"),
        pytest.param("https://user@app.example/client.json", "client_id_userinfo", id="user"),
        pytest.param("https://user:pw@app.example/client.json", "client_id_userinfo", id="user-password"),
        pytest.param("https://evil.example@app.example/c", "client_id_userinfo", id="at-confusion"),
        pytest.param("https://app.example/a/../client.json", "client_id_path_trick", id="dot-dot"),
        pytest.param("https://app.example/./client.json", "client_id_path_trick", id="dot"),
        pytest.param("https://app.example/a/%2e%2e/client.json", "client_id_path_trick", id="encoded-dot-dot"),
        pytest.param("https://app.example/a%2fb", "client_id_path_trick", id="encoded-slash"),
        pytest.param("https://app.example/a b", "client_id_malformed", id="space"),
        pytest.param("https://app.example\\@evil.example/c", "client_id_malformed", id="backslash"),
        pytest.param("https://app.exämple/client.json", "client_id_malformed", id="non-ascii"),
        pytest.param("https://app.example:99999/client.json", "client_id_malformed", id="port-range"),
        pytest.param("https://app.example:/client.json", "client_id_malformed", id="empty-port"),
        pytest.param("https://2130706433/client.json", "ssrf_ip_literal_noncanonical", id="decimal-ip"),
        pytest.param("https://0x7f.1/client.json", "ssrf_ip_literal_noncanonical", id="hex-ip"),
        pytest.param("https://017700000001/client.json", "ssrf_ip_literal_noncanonical", id="octal-ip"),
        pytest.param("https://127.0.0.1./client.json", "ssrf_ip_literal_noncanonical", id="ip-trailing-dot"),
        pytest.param("https://[fe80::1%25eth0]/client.json", "client_id_malformed", id="v6-zone"),
        pytest.param("https://" + "a" * 2000 + ".example/c", "client_id_malformed", id="too-long"),
    ],
)
def test_client_id_url_rules(client_id: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        cimd.check_client_id(client_id)
    assert (caught.value.error, caught.value.reason) == ("invalid_client", reason)


@pytest.mark.parametrize(
    "client_id",
    [
        "https://app.example/client.json",
        "https://app.example:8443/oauth/client",
        "https://app.example/client.json?v=2",  # discouraged by §3, not forbidden
        "https://[2606:4700::1111]/client.json",
        "https://93.184.216.34/client.json",
        "https://App.Example/Client.json",
    ],
)
def test_client_id_url_accepted(client_id: str) -> None:
    assert str(cimd.check_client_id(client_id)) == client_id


async def test_plain_http_is_refused_without_a_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with world(server_context, client_context) as w:
        refusal = await refused(w.resolver, f"http://localhost:{w.served.port}/client.json")
    assert refusal.reason == "client_id_not_https"
    assert w.served.connections == 0


# -- the SSRF guard ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_default_policy_refuses_loopback_before_connecting(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, host: str
) -> None:
    async with world(server_context, client_context, host=host, policy=netguard.Policy()) as w:
        refusal = await refused(w.resolver, w.url)
    assert refusal.reason == "ssrf_loopback"
    assert isinstance(refusal.__cause__, netguard.SSRFBlocked)
    # The client learns only that the document could not be fetched: no oracle for internal addresses.
    assert refusal.description == f"client_id: {cimd.UNREACHABLE}"
    assert w.served.connections == 0


async def test_the_same_server_is_reachable_when_loopback_is_allowed(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with world(server_context, client_context, host="127.0.0.1") as w:
        record = await w.resolver.resolve(w.url)
    assert record.client_id == w.url
    assert w.served.connections == 1


# -- what the server answers -------------------------------------------------------------------------------


async def test_redirect_is_not_followed(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    async def redirect(request: web.BaseRequest, url: str) -> web.StreamResponse:
        if request.path == "/client.json":
            raise web.HTTPFound("/elsewhere.json")
        return json_reply(document(url.replace("/elsewhere.json", "/client.json")))

    async with world(server_context, client_context, redirect) as w:
        refusal = await refused(w.resolver, w.url)
    assert refusal.reason == "metadata_redirect"
    assert w.served.paths == ["/client.json"]


async def test_error_status_is_refused_and_not_cached(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def missing(request: web.BaseRequest, url: str) -> web.StreamResponse:
        return web.Response(status=404, text=SECRET_MARKER)

    async with world(server_context, client_context, missing) as w:
        assert (await refused(w.resolver, w.url)).reason == "metadata_status"
        assert (await refused(w.resolver, w.url)).reason == "metadata_status"
    assert w.served.paths == ["/client.json", "/client.json"]  # §4.4: error responses are not cached


async def big(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return json_reply(document(url, padding="x" * 6000))


async def big_chunked(request: web.BaseRequest, url: str) -> web.StreamResponse:
    # No Content-Length: the limit must hold while reading, not only on the header.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"client_id": "' + url.encode() + b'", "padding": "')
    for _ in range(10):
        await response.write(b"x" * 1000)
    await response.write(b'"}')
    await response.write_eof()
    return response


async def small_but_over_limit(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return json_reply(document(url, padding="x" * 300))


@pytest.mark.parametrize(
    ("reply", "options"),
    [
        pytest.param(big, {}, id="content-length-over-5k"),
        pytest.param(big_chunked, {}, id="chunked-over-5k"),
        pytest.param(small_but_over_limit, {"max_bytes": 512}, id="configured-limit"),
    ],
)
async def test_oversized_document_is_refused(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, reply: Reply, options: dict[str, Any]
) -> None:
    async with world(server_context, client_context, reply, **options) as w:
        refusal = await refused(w.resolver, w.url)
    assert refusal.reason == "metadata_too_large"


async def test_slow_server_times_out_and_the_failure_is_cached_briefly(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    release = asyncio.Event()

    async def stalled(request: web.BaseRequest, url: str) -> web.StreamResponse:
        await release.wait()
        return json_reply(document(url))

    async with world(server_context, client_context, stalled, timeout=0.3) as w:
        try:
            first = await refused(w.resolver, w.url)
            second = await refused(w.resolver, w.url)  # within negative_cache_seconds: no new attempt
            w.clock.now += 10
            release.set()
            record = await w.resolver.resolve(w.url)
        finally:
            release.set()
    assert (first.reason, second.reason) == ("metadata_timeout", "metadata_timeout")
    assert first.description == f"client_id: {cimd.UNREACHABLE}"
    assert record.client_id == w.url
    assert w.served.connections == 2


async def html(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return web.Response(text=f"<html>{SECRET_MARKER}</html>", content_type="text/html")


async def not_json(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return web.Response(text=f"{{{SECRET_MARKER}", content_type="application/json")


async def not_object(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return json_reply([url, SECRET_MARKER])


async def gzipped(request: web.BaseRequest, url: str) -> web.StreamResponse:
    return web.Response(
        body=orjson.dumps(document(url)), content_type="application/json", headers={"Content-Encoding": "gzip"}
    )


async def vendor_json(request: web.BaseRequest, url: str) -> web.StreamResponse:
    body = orjson.dumps(document(url))
    return web.Response(body=body, headers={"Content-Type": "application/oauth-client+json; charset=utf-8"})


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        pytest.param(html, "metadata_content_type", id="html"),
        pytest.param(not_json, "metadata_not_json", id="json-type-but-not-json"),
        pytest.param(not_object, "metadata_not_object", id="json-array"),
        pytest.param(gzipped, "metadata_encoding", id="content-encoding"),
    ],
)
async def test_non_json_is_refused(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, reply: Reply, reason: str
) -> None:
    async with world(server_context, client_context, reply) as w:
        refusal = await refused(w.resolver, w.url)
    assert refusal.reason == reason


async def test_structured_json_type_is_accepted(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    async with world(server_context, client_context, vendor_json) as w:
        record = await w.resolver.resolve(w.url)
    assert record.client_id == w.url


async def test_untrusted_certificate_is_unreachable(server_context: ssl.SSLContext) -> None:
    async with world(server_context, ssl.create_default_context()) as w:
        refusal = await refused(w.resolver, w.url)
    assert refusal.reason == "metadata_unreachable"


# -- the document (§4.1, via oauth.registration) ---------------------------------------------------------


def _changes(url: str, ec_key: ECKey) -> dict[str, dict[str, Any]]:
    jwks = {"keys": [ec_key.as_dict(private=False)]}
    return {
        "mismatch": {"client_id": url + "?other"},
        "mismatch-case": {"client_id": url.upper()},
        "no-client-id": {"client_id": None},
        "client-secret": {"client_secret": SECRET_MARKER},
        "client-secret-expires-at": {"client_secret_expires_at": 0},
        "secret-basic": {"token_endpoint_auth_method": "client_secret_basic"},
        "secret-post": {"token_endpoint_auth_method": "client_secret_post"},
        "secret-jwt": {"token_endpoint_auth_method": "client_secret_jwt"},
        "no-redirect-uris": {"redirect_uris": None},
        "empty-redirect-uris": {"redirect_uris": []},
        "machine-client-without-redirect-uris": {
            "redirect_uris": None,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jwks,
        },
        "http-redirect-uri": {"redirect_uris": ["http://app.example/cb"]},
        "fragment-redirect-uri": {"redirect_uris": ["https://app.example/cb#x"]},
        "javascript-redirect-uri": {"redirect_uris": ["javascript:alert(1)"]},
        "unknown-scope": {"scope": "admin"},
    }


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("mismatch", "metadata_document_mismatch", id="client-id-mismatch"),
        pytest.param("mismatch-case", "metadata_document_mismatch", id="client-id-case"),
        pytest.param("no-client-id", "metadata_document_mismatch", id="client-id-missing"),
        pytest.param("client-secret", "auth_method_unsupported", id="client-secret"),
        pytest.param("client-secret-expires-at", "auth_method_unsupported", id="client-secret-expires-at"),
        pytest.param("secret-basic", "auth_method_unsupported", id="client-secret-basic"),
        pytest.param("secret-post", "auth_method_unsupported", id="client-secret-post"),
        pytest.param("secret-jwt", "auth_method_unsupported", id="client-secret-jwt"),
        pytest.param("no-redirect-uris", "redirect_uri_missing", id="no-redirect-uris"),
        pytest.param("empty-redirect-uris", "redirect_uri_missing", id="empty-redirect-uris"),
        pytest.param("machine-client-without-redirect-uris", "redirect_uri_missing", id="machine-client"),
        pytest.param("http-redirect-uri", "redirect_uri_insecure", id="http-redirect-uri"),
        pytest.param("fragment-redirect-uri", "redirect_uri_malformed", id="fragment-redirect-uri"),
        pytest.param("javascript-redirect-uri", "redirect_uri_scheme", id="javascript-redirect-uri"),
        pytest.param("unknown-scope", "scope_unknown", id="unknown-scope"),
    ],
)
async def test_document_rules(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, ec_key: ECKey, case: str, reason: str
) -> None:
    async def reply(request: web.BaseRequest, url: str) -> web.StreamResponse:
        return json_reply(document(url, **_changes(url, ec_key)[case]))

    async with world(server_context, client_context, reply) as w:
        first = await refused(w.resolver, w.url)
        second = await refused(w.resolver, w.url)
    assert (first.reason, second.reason) == (reason, reason)
    assert len(w.served.paths) == 2  # §4.4: invalid documents are not cached


async def test_private_key_jwt_client_is_accepted(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, ec_key: ECKey
) -> None:
    async def reply(request: web.BaseRequest, url: str) -> web.StreamResponse:
        keys = {"keys": [ec_key.as_dict(private=False)]}
        return json_reply(document(url, token_endpoint_auth_method="private_key_jwt", jwks=keys))

    async with world(server_context, client_context, reply) as w:
        record = await w.resolver.resolve(w.url)
    assert record.auth_method == "private_key_jwt"
    assert "jwks" in record.metadata


def test_bad_configuration_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError):
        ClientMetadataResolver(LOOPBACK, known_scopes=KNOWN, cache_seconds=10, min_cache_seconds=60)
    with pytest.raises(ConfigError):
        ClientMetadataResolver(LOOPBACK, known_scopes=KNOWN, timeout=0)


def test_plugs_into_the_authorization_server_seam() -> None:
    documents: MetadataDocuments = ClientMetadataResolver(LOOPBACK, known_scopes=KNOWN)  # checked by mypy
    assert callable(documents.fetch)
