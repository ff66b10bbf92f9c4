"""End to end with the real mcp client: progress, cancellation, session end — over an HTTP upstream and a
stdio upstream, in both protocol eras."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.demo.customers import STEP_SECONDS_VARIABLE
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.helpers.procs import child_env, serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SLOW = {STEP_SECONDS_VARIABLE: "5"}


@contextlib.asynccontextmanager
async def gateway_for(kind: str, tmp_path: Path, env: dict[str, str] | None = None) -> AsyncIterator[RunningGateway]:
    if kind == "http":
        async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0", env=env) as url:
            async with running_gateway(tmp_path, {"up": {"url": url, "allow_insecure_http": True}}) as gw:
                yield gw
        return
    command = [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"]
    upstream = {"command": command, "env": child_env(env)}
    async with running_gateway(tmp_path, {"up": upstream}) as gw:
        yield gw


def connect(gw: RunningGateway, mode: str, subject: str = "alice") -> tuple[Client, object]:
    http = gw.http(gw.token(subject))
    return Client(streamable_http_client(gw.url("up"), http_client=http), mode=mode, cache=None), http


KINDS = ["http", "stdio"]
MODES = ["legacy", "auto"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
async def test_tools_progress_and_session_end(kind: str, mode: str, tmp_path: Path) -> None:
    async with gateway_for(kind, tmp_path) as gw:
        client, http = connect(gw, mode)
        seen: list[float] = []
        got_all = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)
            if total is not None and progress >= total:
                got_all.set()

        async with http, client:  # type: ignore[attr-defined]
            assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"get_customer", "delete_customer", "export_report"} <= names
            found = await client.call_tool("get_customer", {"customer_id": "C002"})
            assert not found.is_error
            report = await client.call_tool("export_report", {"region": "eu"}, progress_callback=on_progress)
            assert not report.is_error
            with anyio.fail_after(10):  # progress callbacks run as tasks of their own
                await got_all.wait()
            assert seen == sorted(seen)
            assert len(seen) >= 2
            if mode == "legacy":
                assert len(gw.gateway.sessions) == 1
        records = gw.audit()
        calls = [r for r in records if r["method"] == "tools/call"]
        assert [r["target"] for r in calls] == ["get_customer", "export_report"]
        assert all(r["decision"] == "allow" and r["principal"] == "alice" for r in records)
        if mode == "legacy":
            # The client ended its session: DELETE went through the gate and the session is gone.
            with anyio.fail_after(5):
                while len(gw.gateway.sessions):
                    await anyio.sleep(0.02)
            assert any(r["method"] == "(http DELETE)" and r["decision"] == "allow" for r in gw.audit())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
async def test_cancellation_reaches_the_upstream(kind: str, mode: str, tmp_path: Path) -> None:
    async with gateway_for(kind, tmp_path, env=SLOW) as gw:
        client, http = connect(gw, mode)
        started = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        async with http, client:  # type: ignore[attr-defined]
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tasks:

                    async def slow_call() -> None:
                        await client.call_tool("export_report", {"region": "us"}, progress_callback=on_progress)

                    tasks.start_soon(slow_call)
                    await started.wait()  # the export runs (5 s per step) ...
                    tasks.cancel_scope.cancel()  # ... and the caller gives up
            # The session (or the principal's channel) is still usable afterwards.
            again = await client.call_tool("get_customer", {"customer_id": "C003"})
            assert not again.is_error
        with anyio.fail_after(10):
            while True:
                records = gw.audit()
                export = [r for r in records if r["target"] == "export_report"]
                if export:
                    break
                await anyio.sleep(0.05)
        if mode == "legacy":
            # Handshake era: the client sent notifications/cancelled, which the gate forwarded.
            assert any(r["method"] == "notifications/cancelled" and r["decision"] == "allow" for r in records)
            # ... and the upstream stopped the export and answered with an error instead of a report.
            assert (export[0]["reason"], export[0]["error_code"]) != ("ok", None), export
        else:
            # 2026-07-28: closing the request is the cancellation; the gate saw the client go.
            assert (export[0]["decision"], export[0]["reason"]) == ("abandoned", "client_disconnected"), export
