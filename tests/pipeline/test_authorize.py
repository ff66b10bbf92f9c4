"""Tests of the ``authorize`` stage: the caller's address, the method allow-list, the policy decision kept
on the exchange, and looking up a tool the gateway has not seen listed (on the caller's own channel)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, cast

import orjson
import pytest

from mcp_bastion.errors import InvalidArguments, MalformedRequest, MethodDenied, PolicyDenied, UpstreamError
from mcp_bastion.exchange import Exchange, HTTPFacts, Principal
from mcp_bastion.jsonrpc.message import JSONValue, Message, classify, parse_message
from mcp_bastion.pipeline import authorize as authorize_module
from mcp_bastion.pipeline.authorize import Authorize, caller_of, ip_of
from mcp_bastion.policy.authorizer import Authorizer
from mcp_bastion.policy.catalog import ServerScopes, ToolCatalog
from mcp_bastion.policy.store import PolicyStore
from mcp_bastion.sessions import Session
from mcp_bastion.upstream.base import Event, Reply, Upstream, one_event

pytestmark = pytest.mark.anyio

POLICY: Final = """
@id("admins") permit (principal in Role::"admin", action == Action::"tools/call", resource in Server::"up");
@id("admins-list") permit (principal in Role::"admin", action in Action::"list", resource == Server::"up");
"""
METHODS: Final = frozenset({"initialize", "ping", "tools/list", "tools/call", "notifications/initialized"})


# -- ip_of ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_addr", "ip"),
    [
        pytest.param("127.0.0.1:5000", "127.0.0.1", id="v4"),
        pytest.param("10.1.2.3:1", "10.1.2.3", id="v4-private"),
        pytest.param("[::1]:8080", "::1", id="v6-bracketed"),
        pytest.param("::1:8080", "::1", id="v6-bare-with-port"),
        pytest.param("fe80::1%eth0:8080", "fe80::1", id="v6-scoped-zone-dropped"),
        pytest.param("[2001:db8::1]:443", "2001:db8::1", id="v6-global"),
        pytest.param("[2001:DB8:0:0::1]:443", "2001:db8::1", id="v6-normalised"),
        pytest.param("10.1.2.3", "10.1.2.3", id="v4-without-port"),
        pytest.param("", "0.0.0.0", id="empty"),
        pytest.param("unix:/run/bastion.sock", "0.0.0.0", id="unix-socket"),
        pytest.param("localhost:80", "0.0.0.0", id="hostname"),
        pytest.param("10.1.2.300:1", "0.0.0.0", id="bad-octet"),
        pytest.param('1.2.3.4" || true:1', "0.0.0.0", id="injection"),
    ],
)
def test_ip_of(client_addr: str, ip: str) -> None:
    assert ip_of(client_addr) == ip


# -- the stage -----------------------------------------------------------------------------------------


class FakeChannel:
    """Answers ``tools/list`` with the configured pages; records what was sent."""

    def __init__(self, pages: list[dict[str, JSONValue]] | None = None) -> None:
        self.pages = pages or []
        self.sent: list[tuple[dict[str, JSONValue], Mapping[str, str]]] = []

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        self.sent.append((orjson.loads(data), dict(headers)))
        index = len(self.sent) - 1
        if index >= len(self.pages):
            answer = orjson.dumps({"jsonrpc": "2.0", "id": message.id, "error": {"code": -32601, "message": "no"}})
        else:
            answer = orjson.dumps({"jsonrpc": "2.0", "id": message.id, "result": self.pages[index]})
        return Reply("json", one_event(Event(answer, parse_message(answer, max_depth=16))))

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        return None


def principal(*roles: str) -> Principal:
    return Principal("alice", "https://issuer", "bearer", roles=frozenset(roles))


def exchange(
    raw: dict[str, JSONValue],
    who: Principal,
    *,
    client_addr: str = "10.0.0.7:5555",
    scheme: str = "https",
    channel: FakeChannel | None = None,
    session: Session | None = None,
) -> Exchange:
    async def read() -> bytes:
        return b""

    facts = HTTPFacts("POST", "/mcp/up", scheme, {"mcp-protocol-version": "2025-06-18"}, client_addr, read)
    ex = Exchange(facts, "up", cast(Upstream, object()), "r1")
    ex.principal = who
    ex.message = classify(raw)
    ex.session = session
    ex.era = "handshake"
    ex.channel = channel or FakeChannel()
    return ex


def request(method: str, params: dict[str, JSONValue] | None = None) -> dict[str, JSONValue]:
    raw: dict[str, JSONValue] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        raw["params"] = params
    return raw


@pytest.fixture
def authorizer(tmp_path: Path) -> Authorizer:
    path = tmp_path / "p.cedar"
    path.write_text(POLICY)
    store = PolicyStore([path], {}, watch=False)
    return Authorizer(store, ToolCatalog({"up": ServerScopes(frozenset(), "up")}), {})


@pytest.fixture
def stage(authorizer: Authorizer) -> Authorize:
    return Authorize(allowed_methods={"up": METHODS}, authorizer=authorizer)


def test_caller_of_uses_the_address_and_the_scheme() -> None:
    who = principal("admin")
    caller = caller_of(exchange(request("ping"), who, client_addr="[::1]:9"))
    assert (caller.principal, caller.address, caller.tls) == (who, "::1", True)
    plain = caller_of(exchange(request("ping"), who, scheme="http", client_addr=""))
    assert (plain.address, plain.tls) == ("0.0.0.0", False)


async def test_a_method_not_allowed_is_denied_before_any_policy(stage: Authorize) -> None:
    for method in ("tools/delete", "sampling/createMessage", "x" * 500):
        with pytest.raises(MethodDenied) as caught:
            await stage(exchange(request(method), principal("admin")))
        assert caught.value.reason == "method_not_allowed"


async def test_a_decided_request_keeps_its_decision_and_version(stage: Authorize, authorizer: Authorizer) -> None:
    ex = exchange(request("tools/list"), principal("admin"))
    await stage(ex)
    assert ex.decision is not None
    assert (ex.decision.allowed, ex.decision.policies) == (True, ("admins-list",))
    assert ex.policy_version == authorizer.engine.version


async def test_a_refused_request_raises_and_keeps_the_version(stage: Authorize, authorizer: Authorizer) -> None:
    ex = exchange(request("tools/list"), principal())
    with pytest.raises(PolicyDenied) as caught:
        await stage(ex)
    assert caught.value.reason == "policy_no_permit"
    assert ex.policy_version == authorizer.engine.version


async def test_methods_not_decided_by_policy_pass(stage: Authorize) -> None:
    ex = exchange(request("ping"), principal())
    await stage(ex)
    assert ex.decision is None
    notification = exchange({"jsonrpc": "2.0", "method": "notifications/initialized"}, principal())
    await stage(notification)
    assert notification.decision is None


async def test_a_response_from_the_client_needs_a_session(stage: Authorize) -> None:
    with pytest.raises(MalformedRequest) as caught:
        await stage(exchange({"jsonrpc": "2.0", "id": 3, "result": {}}, principal("admin")))
    assert caught.value.reason == "response_without_session"
    await stage(exchange({"jsonrpc": "2.0", "id": 3, "result": {}}, principal(), session=cast(Session, object())))


async def test_an_unknown_tool_is_looked_up_on_the_callers_channel(stage: Authorize, authorizer: Authorizer) -> None:
    channel = FakeChannel(
        [
            {"tools": [{"name": "a", "inputSchema": {}}], "nextCursor": "page2"},
            {"tools": [{"name": "wanted", "inputSchema": {}}, "junk"]},
        ]
    )
    ex = exchange(request("tools/call", {"name": "wanted"}), principal("admin"), channel=channel)
    await stage(ex)
    assert ex.decision is not None
    assert ex.decision.allowed
    assert [sent["method"] for sent, _ in channel.sent] == ["tools/list", "tools/list"]
    second, headers = channel.sent[1]
    assert second["params"] == {"cursor": "page2"}
    assert headers == {"mcp-method": "tools/list", "mcp-protocol-version": "2025-06-18"}
    assert authorizer.catalog.get("up", "a") is not None  # the whole list was learnt


async def test_a_tool_still_unknown_after_listing_is_invalid_params(stage: Authorize) -> None:
    channel = FakeChannel([{"tools": [{"name": "a"}]}])
    with pytest.raises(InvalidArguments) as caught:
        await stage(exchange(request("tools/call", {"name": "missing"}), principal("admin"), channel=channel))
    assert caught.value.reason == "tool_unknown"
    assert len(channel.sent) == 1


async def test_an_unknown_tool_is_refused_to_a_user_the_policy_refuses(stage: Authorize) -> None:
    channel = FakeChannel([{"tools": [{"name": "wanted"}]}])
    with pytest.raises(PolicyDenied):
        await stage(exchange(request("tools/call", {"name": "wanted"}), principal(), channel=channel))


async def test_an_upstream_that_cannot_list_its_tools_fails(stage: Authorize) -> None:
    answers: list[list[dict[str, JSONValue]]] = [[], [{"tools": "nope"}], [{"other": []}]]
    for pages in answers:
        with pytest.raises(UpstreamError) as caught:
            await stage(exchange(request("tools/call", {"name": "x"}), principal("admin"), channel=FakeChannel(pages)))
        assert caught.value.reason == "upstream_tools_list_failed"


async def test_listing_is_bounded_in_pages(stage: Authorize, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authorize_module, "MAX_LIST_PAGES", 3)
    endless = FakeChannel([{"tools": [], "nextCursor": f"p{index}"} for index in range(10)])
    with pytest.raises(InvalidArguments):
        await stage(exchange(request("tools/call", {"name": "x"}), principal("admin"), channel=endless))
    assert len(endless.sent) == 3
