"""Trusted key sets (mcp_bastion.oauth.jwks): what a set may hold, and fetching one from an issuer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa as crypto_rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.oauth.access_token import AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.jwks import MAX_JWKS_BYTES, KeySet, RefreshSchedule, RemoteKeySet
from mcp_bastion.oauth.localissuer import LocalIssuer

from .support import FakeClock, b64, public

WAIT = 10.0
"""Upper bound for every network wait in this module."""


def jwks_of(*keys: dict[str, object]) -> dict[str, object]:
    return {"keys": list(keys)}


# --- what a KeySet accepts ---------------------------------------------------------------------------


def test_accepts_the_three_kinds(ec_key: ECKey, ed_key: OKPKey, rsa_key: RSAKey) -> None:
    keys = KeySet.from_jwks(jwks_of(public(ec_key), public(ed_key), public(rsa_key)))
    assert keys.kids == {"ec-1", "ed-1", "rsa-1"}
    assert isinstance(keys.get("ec-1"), ECKey)
    assert keys.get("missing") is None
    assert keys.get(None) is None  # several keys: no guessing without a kid
    assert len(keys) == 3


def test_single_key_without_kid_is_found(ec_key: ECKey) -> None:
    jwk = ec_key.as_dict(private=False)
    del jwk["kid"]
    keys = KeySet.from_jwks(jwks_of(dict(jwk)))
    assert keys.get(None) is not None
    assert keys.kids == {ECKey.import_key(jwk).thumbprint()}  # RFC 7638 thumbprint as kid


def _with(jwk: dict[str, object], **changes: object) -> dict[str, object]:
    return {**jwk, **changes}


def _rsa_1024() -> dict[str, object]:
    # Built by hand: joserfc warns (SecurityWarning, an error under pytest) when it makes a short RSA key.
    short = crypto_rsa.generate_private_key(65537, 1024)  # noqa: S505 - deliberately too short, to be refused
    numbers = short.public_key().public_numbers()
    return {"kty": "RSA", "kid": "rsa-small", "n": b64(numbers.n.to_bytes(128, "big")), "e": "AQAB"}


@pytest.mark.parametrize(
    ("make", "skippable"),
    [
        pytest.param(lambda ec, rsa: dict(ec.as_dict(private=True)), False, id="ec-private"),
        pytest.param(lambda ec, rsa: dict(rsa.as_dict(private=True)), False, id="rsa-private"),
        pytest.param(lambda ec, rsa: {**public(rsa), "d": "AQAB"}, False, id="rsa-public-plus-d"),
        pytest.param(lambda ec, rsa: {"kty": "RSA", "e": "AQAB"}, False, id="rsa-without-n"),
        pytest.param(
            lambda ec, rsa: {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "o"}, False, id="oct-secret"
        ),
        pytest.param(lambda ec, rsa: _with(public(ec), x=public(ec)["y"]), False, id="point-not-on-curve"),
        pytest.param(lambda ec, rsa: _with(public(ec), x="!!"), False, id="bad-base64"),
        pytest.param(lambda ec, rsa: "not an object", False, id="not-an-object"),
        pytest.param(lambda ec, rsa: _rsa_1024(), True, id="rsa-1024"),
        pytest.param(lambda ec, rsa: public(ECKey.generate_key("P-384")), True, id="ec-p384"),
        pytest.param(lambda ec, rsa: public(OKPKey.generate_key("X25519")), True, id="okp-x25519"),
        pytest.param(lambda ec, rsa: _with(public(ec), use="enc"), True, id="use-enc"),
        pytest.param(lambda ec, rsa: _with(public(ec), key_ops=["encrypt"]), True, id="key-ops-no-verify"),
        pytest.param(lambda ec, rsa: {"kty": "AKP", "alg": "ML-DSA-44", "pub": "AA"}, True, id="unknown-kty"),
    ],
)
def test_refused_keys(make: Callable[[ECKey, RSAKey], object], skippable: bool, ec_key: ECKey, rsa_key: RSAKey) -> None:
    document = {"keys": [make(ec_key, rsa_key)]}
    with pytest.raises(ConfigError):
        KeySet.from_jwks(document)
    if skippable:
        assert len(KeySet.from_jwks(document, skip_unsupported=True)) == 0
    else:
        # Private material and broken keys refuse the set even when unsupported keys would be skipped.
        with pytest.raises(ConfigError):
            KeySet.from_jwks(document, skip_unsupported=True)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"{}", id="no-keys"),
        pytest.param(b'{"keys": {}}', id="keys-not-array"),
        pytest.param(b'{"keys": []}' + b" " * MAX_JWKS_BYTES, id="too-large"),
        pytest.param(orjson.dumps({"keys": [{"kty": "EC"}] * 101}), id="too-many-keys"),
    ],
)
def test_refused_documents(document: bytes) -> None:
    with pytest.raises(ConfigError):
        KeySet.from_json(document)


def test_duplicate_kid_refused(ec_key: ECKey) -> None:
    other = _with(public(ECKey.generate_key("P-256")), kid="ec-1")
    with pytest.raises(ConfigError):
        KeySet.from_jwks(jwks_of(public(ec_key), other))


def test_private_key_object_refused(ec_key: ECKey) -> None:
    with pytest.raises(ConfigError):
        KeySet([ec_key])


def test_from_file(tmp_path: Path, ec_key: ECKey, ed_key: OKPKey) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps(jwks_of(public(ec_key), public(ed_key))))
    assert KeySet.from_file(path).kids == {"ec-1", "ed-1"}
    with pytest.raises(ConfigError):
        KeySet.from_file(tmp_path / "missing.json")


def test_as_jwks_is_public_and_the_set_immutable(ec_key: ECKey) -> None:
    keys = KeySet.from_jwks(jwks_of(public(ec_key)))
    assert keys.as_jwks() == {"keys": [public(ec_key)]}
    with pytest.raises(AttributeError):
        keys.extra = 1  # type: ignore[attr-defined]
    copy = keys.as_joserfc()
    copy.keys.clear()
    assert len(keys) == 1


# --- refresh schedule (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fetched_at", "attempted_at", "now", "unknown_kid", "due"),
    [
        pytest.param(None, None, 0.0, False, True, id="never-fetched"),
        pytest.param(0.0, 0.0, 59.0, True, False, id="unknown-kid-throttled"),
        pytest.param(0.0, 0.0, 60.0, True, True, id="unknown-kid-after-a-minute"),
        pytest.param(0.0, 0.0, 899.0, False, False, id="fresh"),
        pytest.param(0.0, 0.0, 900.0, False, True, id="periodic-refresh"),
        pytest.param(None, 100.0, 130.0, False, False, id="failed-retry-throttled"),
        pytest.param(None, 100.0, 160.0, False, True, id="failed-retry-after-a-minute"),
        pytest.param(0.0, 900.0, 950.0, False, False, id="failed-refresh-throttled"),
        pytest.param(0.0, 900.0, 960.0, False, True, id="failed-refresh-retried"),
    ],
)
def test_refresh_schedule(
    fetched_at: float | None, attempted_at: float | None, now: float, unknown_kid: bool, due: bool
) -> None:
    schedule = RefreshSchedule(fetched_at=fetched_at, attempted_at=attempted_at)
    assert schedule.fetch_due(now, unknown_kid=unknown_kid) is due


# --- RemoteKeySet against a real local HTTP server -----------------------------------------------------


@dataclass
class JWKSServer:
    """Serves ``body`` at ``url``; tests change the body or status and read ``hits``."""

    body: bytes = b""
    status: int = 200
    chunked: bool = False
    redirect_to: str = ""
    gate: anyio.Event | None = None
    """When set, answers wait until the event fires (a slow issuer)."""
    arrived: anyio.Event | None = None
    """When set, fired as a request arrives."""
    hits: int = 0
    url: str = ""


@pytest.fixture
async def server() -> AsyncIterator[JWKSServer]:
    state = JWKSServer()

    async def handler(request: web.Request) -> web.StreamResponse:
        state.hits += 1
        if state.arrived is not None:
            state.arrived.set()
        if state.gate is not None:
            await state.gate.wait()
        if state.redirect_to:
            raise web.HTTPFound(state.redirect_to)
        if not state.chunked:
            return web.Response(body=state.body, status=state.status, content_type="application/json")
        response = web.StreamResponse(status=state.status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(state.body), 8192):
            await response.write(state.body[start : start + 8192])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/jwks", handler)
    runner = web.AppRunner(app, access_log=None)
    with anyio.fail_after(WAIT):
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/jwks"
    try:
        yield state
    finally:
        with anyio.fail_after(WAIT):
            await runner.cleanup()


@pytest.fixture
async def remote_factory(server: JWKSServer) -> AsyncIterator[Callable[[FakeClock], RemoteKeySet]]:
    made: list[RemoteKeySet] = []

    def make(clock: FakeClock) -> RemoteKeySet:
        remote = RemoteKeySet(server.url, None, allow_insecure_http=True, clock=clock)
        made.append(remote)
        return remote

    yield make
    with anyio.fail_after(WAIT):
        for remote in made:
            await remote.aclose()


@pytest.mark.anyio
async def test_fetch_and_cache(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], ec_key: ECKey
) -> None:
    server.body = orjson.dumps(jwks_of(public(ec_key)))
    remote = remote_factory(FakeClock(0.0))
    with anyio.fail_after(WAIT):
        assert await remote.key_for("ec-1") == ECKey.import_key(ec_key.as_dict(private=False))
        assert await remote.key_for("ec-1") is not None
    assert server.hits == 1


@pytest.mark.anyio
async def test_unknown_kid_refetch_is_throttled(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], ec_key: ECKey, ed_key: OKPKey
) -> None:
    server.body = orjson.dumps(jwks_of(public(ec_key)))
    clock = FakeClock(0.0)
    remote = remote_factory(clock)
    with anyio.fail_after(WAIT):
        await remote.key_for("ec-1")
        clock.now = 10.0
        assert await remote.key_for("invented-1") is None
        assert server.hits == 1  # within a minute of the last fetch: no new request
        clock.now = 61.0
        assert await remote.key_for("invented-2") is None
        assert server.hits == 2
        clock.now = 62.0
        async with anyio.create_task_group() as group:
            for n in range(50):
                group.start_soon(remote.key_for, f"flood-{n}")
        assert server.hits == 2
        server.body = orjson.dumps(jwks_of(public(ec_key), public(ed_key)))  # the issuer rotates in a key
        clock.now = 121.0
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(remote.key_for, "ed-1")
        assert server.hits == 3  # concurrent lookups of the new kid share one fetch
        assert await remote.key_for("ed-1") is not None


@pytest.mark.anyio
async def test_periodic_refresh_and_stale_set(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], ec_key: ECKey
) -> None:
    server.body = orjson.dumps(jwks_of(public(ec_key)))
    clock = FakeClock(0.0)
    remote = remote_factory(clock)
    with anyio.fail_after(WAIT):
        await remote.key_for("ec-1")
        clock.now = 899.0
        await remote.key_for("ec-1")
        assert server.hits == 1
        clock.now = 900.0
        await remote.key_for("ec-1")
        assert server.hits == 2
        server.status = 500
        clock.now = 1800.0
        assert await remote.key_for("ec-1") is not None  # the issuer is down: keep the last good set
        assert server.hits == 3
        clock.now = 1830.0
        await remote.key_for("ec-1")
        assert server.hits == 3  # failures are retried at most once a minute too
        clock.now = 900.0 + 24 * 3600 + 1  # the last good set is now too old to trust
        with pytest.raises(Unavailable):
            await remote.key_for("ec-1")


@pytest.mark.anyio
async def test_key_withdrawn_by_issuer_stops_working(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], ec_key: ECKey, ed_key: OKPKey
) -> None:
    server.body = orjson.dumps(jwks_of(public(ec_key), public(ed_key)))
    clock = FakeClock(0.0)
    remote = remote_factory(clock)
    with anyio.fail_after(WAIT):
        assert await remote.key_for("ed-1") is not None
        server.body = orjson.dumps(jwks_of(public(ec_key)))
        clock.now = 900.0
        assert await remote.key_for("ed-1") is None


@pytest.mark.anyio
async def test_known_keys_do_not_wait_for_a_refresh(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], ec_key: ECKey
) -> None:
    server.body = orjson.dumps(jwks_of(public(ec_key)))
    clock = FakeClock(0.0)
    remote = remote_factory(clock)
    with anyio.fail_after(WAIT):
        await remote.key_for("ec-1")
        server.gate, server.arrived = anyio.Event(), anyio.Event()
        clock.now = 900.0  # refresh due; the issuer is slow to answer
        async with anyio.create_task_group() as group:
            group.start_soon(remote.key_for, "ec-1")
            await server.arrived.wait()  # the refreshing lookup is waiting on the issuer
            assert await remote.key_for("ec-1") is not None  # served from the current set meanwhile
            server.gate.set()


@pytest.mark.anyio
async def test_fetch_timeout(server: JWKSServer) -> None:
    server.gate = anyio.Event()  # never set: the issuer never answers
    remote = RemoteKeySet(server.url, None, allow_insecure_http=True, timeout_seconds=0.2)
    try:
        with anyio.fail_after(WAIT), pytest.raises(Unavailable):
            await remote.refresh()
    finally:
        server.gate.set()
        await remote.aclose()


@pytest.mark.anyio
async def test_unreachable_issuer_fails_closed(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet]
) -> None:
    server.status = 503
    clock = FakeClock(0.0)
    remote = remote_factory(clock)
    with anyio.fail_after(WAIT):
        for now in (0.0, 30.0):
            clock.now = now
            with pytest.raises(Unavailable):
                await remote.key_for("ec-1")
        assert server.hits == 1
        with pytest.raises(Unavailable):
            await remote.refresh()


@pytest.mark.parametrize(
    ("body", "chunked", "status", "redirect"),
    [
        pytest.param(b'{"keys": []}' + b" " * MAX_JWKS_BYTES, False, 200, False, id="too-large-content-length"),
        pytest.param(b'{"keys": []}' + b" " * MAX_JWKS_BYTES, True, 200, False, id="too-large-chunked"),
        pytest.param(b"not json", False, 200, False, id="not-json"),
        pytest.param(b'{"keys": []}', False, 404, False, id="http-404"),
        pytest.param(b'{"keys": []}', False, 200, True, id="redirect-not-followed"),
        pytest.param(b"", False, 200, False, id="empty"),
    ],
)
@pytest.mark.anyio
async def test_bad_responses_refused(
    body: bytes,
    chunked: bool,
    status: int,
    redirect: bool,
    server: JWKSServer,
    remote_factory: Callable[[FakeClock], RemoteKeySet],
) -> None:
    server.body, server.chunked, server.status = body, chunked, status
    if redirect:
        server.redirect_to = server.url + "?again"
    remote = remote_factory(FakeClock(0.0))
    with anyio.fail_after(WAIT), pytest.raises(Unavailable):
        await remote.refresh()
    assert remote.current is None
    assert server.hits == 1


@pytest.mark.anyio
async def test_private_material_from_issuer_refused(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], ec_key: ECKey
) -> None:
    server.body = orjson.dumps({"keys": [dict(ec_key.as_dict(private=True))]})
    remote = remote_factory(FakeClock(0.0))
    with anyio.fail_after(WAIT), pytest.raises(Unavailable):
        await remote.refresh()


@pytest.mark.anyio
async def test_verifier_uses_remote_keys(
    server: JWKSServer, remote_factory: Callable[[FakeClock], RemoteKeySet], tmp_path: Path
) -> None:
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer.jwk", "https://issuer.example")
    server.body = orjson.dumps(issuer.public_keys().as_jwks())
    verifier = AccessTokenVerifier([TrustedIssuer(issuer.issuer, remote_factory(FakeClock(0.0)))])
    with anyio.fail_after(WAIT):
        claims = await verifier.verify(
            issuer.mint("alice", "https://gw.example/mcp"), audience="https://gw.example/mcp"
        )
    assert claims.subject == "alice"


@pytest.mark.parametrize(
    ("url", "allow_insecure_http"),
    [
        pytest.param("http://jwks.example/keys", True, id="http-public-host-with-flag"),
        pytest.param("http://10.0.0.1/keys", True, id="http-private-ip-with-flag"),
        pytest.param("http://localhost/keys", True, id="http-localhost-name"),
        pytest.param("http://127.0.0.1/keys", False, id="http-loopback-without-flag"),
        pytest.param("ftp://127.0.0.1/keys", True, id="other-scheme"),
        pytest.param("https:///keys", False, id="no-host"),
        pytest.param("/keys", False, id="relative"),
    ],
)
def test_insecure_urls_refused_without_connecting(
    url: str, allow_insecure_http: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(aiohttp, "ClientSession", no_session)
    monkeypatch.setattr(aiohttp, "TCPConnector", no_session)
    with pytest.raises(ConfigError):
        RemoteKeySet(url, None, allow_insecure_http=allow_insecure_http)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://jwks.example/keys", id="https"),
        pytest.param("http://127.0.0.1:8080/keys", id="http-ipv4-loopback"),
        pytest.param("http://[::1]:8080/keys", id="http-ipv6-loopback"),
    ],
)
def test_acceptable_urls(url: str) -> None:
    RemoteKeySet(url, None, allow_insecure_http=True)
