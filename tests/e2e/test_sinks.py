"""End to end: sink-aware argument checks through the real gateway with the real ``mcp`` client.

A ``read_file`` tool whose ``path`` is configured with a root: a traversal (plain or encoded) and a symlink
out of the root are refused with JSON-RPC -32602 and ``argument_unsafe_path`` naming ``/path``, and nothing
reaches the upstream; a benign path inside the root passes. A ``fetch`` tool nobody configured gets an
inferred ``url`` sink from its pinned schema: the cloud metadata address is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.gateway import RunningGateway, running_gateway
from tests.helpers.recording import Recorder, recording_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

READ_FILE = {
    "name": "read_file",
    "description": "Read a file under the data directory.",
    "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "annotations": {"readOnlyHint": True},
}
FETCH = {
    "name": "fetch",
    "description": "Fetch a URL.",
    "inputSchema": {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}},
    "annotations": {"readOnlyHint": True},
}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, Recorder, Path]]:
    root = tmp_path / "data"
    (root / "reports").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (root / "shortcut").symlink_to(tmp_path / "secrets")
    async with recording_upstream() as recorder:
        recorder.tools = [dict(READ_FILE), dict(FETCH)]
        upstream = {
            "url": recorder.url,
            "allow_insecure_http": True,
            "tools": {"read_file": {"sinks": {"path": {"kind": "path", "roots": [str(root)]}}}},
        }
        async with running_gateway(tmp_path, {"files": upstream}) as gw:
            yield gw, recorder, root


async def session(
    gw: RunningGateway, recorder: Recorder, tool: str | None, arguments: object = None
) -> tuple[str, int]:
    """One client session: list the tools (the gateway pins them), call ``tool`` if given. Returns the tool's
    text (the recorder answers with the credential it got: none here) or the refusal as ``code reason path``,
    and how many requests reached the upstream during the session."""
    seen = len(recorder.requests)
    outcome = ""
    async with gw.http(gw.token(server="files")) as http:
        async with Client(streamable_http_client(gw.url("files"), http_client=http), mode="auto") as client:
            await client.list_tools()
            if tool is not None:
                try:
                    result = await client.call_tool(tool, arguments)  # type: ignore[arg-type]
                    outcome = str(getattr(result.content[0], "text", ""))
                except MCPError as error:
                    data = error.data or {}
                    outcome = f"{error.code} {data.get('reason')} {data.get('path')}"
    return outcome, len(recorder.requests) - seen


async def test_path_sink_refuses_escapes_and_passes_benign_paths(
    setup: tuple[RunningGateway, Recorder, Path],
) -> None:
    gw, recorder, root = setup
    _, baseline = await session(gw, recorder, None)  # the session's own traffic (initialize, tools/list)
    benign = await session(gw, recorder, "read_file", {"path": f"{root}/reports/q1 (final)..md"})
    assert benign == ("(none)", baseline + 1)  # the tool answered
    for attack in (
        f"{root}/../secrets/key.pem",
        f"{root}/%2e%2e/secrets/key.pem",
        f"{root}/shortcut/key.pem",  # a symlink out of the root, resolved on this machine
        "/etc/passwd",
        "~/.ssh/id_rsa",
    ):
        refused = await session(gw, recorder, "read_file", {"path": attack})
        assert refused == ("-32602 argument_unsafe_path /path", baseline), attack  # nothing reached the upstream
    refusals = [r for r in gw.audit() if r.get("reason") == "argument_unsafe_path"]
    assert len(refusals) == 5
    assert "secrets" not in str(refusals)  # the path, never the value
    assert "passwd" not in str(refusals)


async def test_an_inferred_url_sink_refuses_the_metadata_address(
    setup: tuple[RunningGateway, Recorder, Path],
) -> None:
    gw, recorder, _ = setup
    _, baseline = await session(gw, recorder, None)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]/", "http://2130706433/"):
        assert await session(gw, recorder, "fetch", {"url": url}) == ("-32602 argument_unsafe_url /url", baseline)
