"""Tests of ``policy.store``: loading at startup, reloading (good sets swapped in, bad ones refused and
audited), file watching and SIGHUP. Waits are bounded with ``anyio.fail_after``; the watcher polls fast."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio
import pytest

from mcp_bastion.audit.sink import MemorySink
from mcp_bastion.errors import ConfigError
from mcp_bastion.exchange import Principal
from mcp_bastion.policy import entities
from mcp_bastion.policy import store as store_module
from mcp_bastion.policy.engine import PolicyEngine
from mcp_bastion.policy.store import PolicyStore

pytestmark = pytest.mark.anyio

WAIT: Final = 5.0
"""Seconds a reload may take to be noticed (the watcher polls every 10 ms)."""
ALLOW_ALICE: Final = '@id("alice") permit (principal == User::"alice", action, resource);\n'
ALLOW_BOB: Final = '@id("bob") permit (principal == User::"bob", action, resource);\n'
TYPO: Final = 'permit (principal, action == Action::"tools/call", resource) when { resource.readonly };\n'
ALICE: Final = entities.Caller(Principal("alice", "i", "bearer"), "10.0.0.1", tls=True)
BOB: Final = entities.Caller(Principal("bob", "i", "bearer"), "10.0.0.1", tls=True)
TOOL: Final = entities.ToolFacts("s", "t", frozenset())


def allows(engine: PolicyEngine, caller: entities.Caller) -> bool:
    return engine.decide(entities.tool_query(caller, TOOL, None)).allowed


def write(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime on, so a change is visible even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not condition():
            await anyio.sleep(0.01)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "main.cedar"
    path.write_text(ALLOW_ALICE)
    return path


# -- startup -------------------------------------------------------------------------------------------


def test_startup_loads_the_files(policy_file: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.cedar"
    second.write_text(ALLOW_BOB)
    store = PolicyStore([policy_file, second], {}, watch=False)
    assert store.engine.count == 2
    assert allows(store.engine, ALICE)
    assert allows(store.engine, BOB)


@pytest.mark.parametrize(
    "text",
    [pytest.param(TYPO, id="typo"), pytest.param("permit (", id="parse"), pytest.param(b"\xff\xfe", id="not-utf8")],
)
def test_startup_with_an_invalid_file_is_a_config_error(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "bad.cedar"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        PolicyStore([path], {}, watch=False)
    assert caught.value.reason == "config_error"
    assert "bad.cedar" in caught.value.detail


def test_startup_with_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        PolicyStore([tmp_path / "absent.cedar"], {}, watch=False)
    assert "absent.cedar" in caught.value.detail


def test_startup_with_a_too_large_file_is_a_config_error(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_POLICY_BYTES", len(ALLOW_ALICE) - 1)
    with pytest.raises(ConfigError):
        PolicyStore([policy_file], {}, watch=False)


def test_startup_with_no_files_is_an_empty_set_that_denies() -> None:
    store = PolicyStore([], {}, watch=False)
    assert store.engine.count == 0
    assert not allows(store.engine, ALICE)


# -- reload --------------------------------------------------------------------------------------------


def test_a_good_reload_swaps_the_engine_and_is_audited(policy_file: Path) -> None:
    sink = MemorySink()
    store = PolicyStore([policy_file], {}, audit=sink, watch=False)
    old = store.engine
    write(policy_file, ALLOW_BOB)
    assert store.reload() is True
    assert store.engine is not old
    assert (allows(store.engine, ALICE), allows(store.engine, BOB)) == (False, True)
    assert (allows(old, ALICE), allows(old, BOB)) == (True, False)  # the old engine, still held, is unchanged
    assert [(record["decision"], record["reason"]) for record in sink.records] == [("allow", "policy_reloaded")]
    record = sink.records[0]
    assert record["policy_version"] == store.engine.version
    assert old.version in str(record["detail"])
    assert store.engine.version in str(record["detail"])


def test_a_bad_new_file_is_refused_and_the_old_engine_stays(policy_file: Path) -> None:
    sink = MemorySink()
    store = PolicyStore([policy_file], {}, audit=sink, watch=False)
    old = store.engine
    write(policy_file, ALLOW_BOB + TYPO)
    assert store.reload() is False
    assert store.engine is old
    assert allows(store.engine, ALICE)
    assert not allows(store.engine, BOB)
    assert [(record["decision"], record["reason"]) for record in sink.records] == [("error", "policy_reload_refused")]
    assert "readonly" in str(sink.records[0]["detail"])
    assert sink.records[0]["policy_version"] == old.version


@pytest.mark.parametrize("how", ["deleted", "directory", "not-utf8"])
def test_a_file_that_cannot_be_read_on_reload_is_refused_never_an_empty_set(policy_file: Path, how: str) -> None:
    sink = MemorySink()
    store = PolicyStore([policy_file], {}, audit=sink, watch=False)
    old = store.engine
    policy_file.unlink()
    if how == "directory":
        policy_file.mkdir()
    elif how == "not-utf8":
        policy_file.write_bytes(b"permit (principal, action, resource); // \xff")
    assert store.reload() is False
    assert store.engine is old
    assert allows(store.engine, ALICE)
    assert [record["reason"] for record in sink.records] == ["policy_reload_refused"]


def test_a_deliberately_emptied_file_reloads_to_deny_everything(policy_file: Path) -> None:
    store = PolicyStore([policy_file], {}, watch=False)
    write(policy_file, "// everything off\n")
    assert store.reload() is True
    assert store.engine.count == 0
    assert not allows(store.engine, ALICE)


def test_reload_without_an_audit_sink(policy_file: Path) -> None:
    store = PolicyStore([policy_file], {}, watch=False)
    write(policy_file, TYPO)
    assert store.reload() is False
    write(policy_file, ALLOW_BOB)
    assert store.reload() is True


# -- watching and SIGHUP -------------------------------------------------------------------------------


async def test_a_changed_file_is_reloaded_by_the_watcher(policy_file: Path) -> None:
    sink = MemorySink()
    store = PolicyStore([policy_file], {}, audit=sink, poll_seconds=0.01)
    await store.start()
    try:
        old = store.engine
        write(policy_file, ALLOW_BOB)
        await until(lambda: store.engine is not old)
        assert allows(store.engine, BOB)
        good = store.engine
        write(policy_file, TYPO)
        await until(lambda: len(sink.records) == 2)
        assert sink.records[1]["reason"] == "policy_reload_refused"
        assert store.engine is good
        write(policy_file, ALLOW_ALICE + ALLOW_BOB)
        await until(lambda: store.engine is not good)
        assert (allows(store.engine, ALICE), allows(store.engine, BOB)) == (True, True)
        # A broken file is refused once, not on every poll.
        assert [record["reason"] for record in sink.records] == [
            "policy_reloaded",
            "policy_reload_refused",
            "policy_reloaded",
        ]
    finally:
        await store.aclose()


async def test_sighup_reloads(policy_file: Path) -> None:
    store = PolicyStore([policy_file], {}, watch=False)
    await store.start()
    try:
        # Without the gateway's handler SIGHUP would end the test process: never send it then.
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        old = store.engine
        write(policy_file, ALLOW_BOB)
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: store.engine is not old)
        assert allows(store.engine, BOB)
    finally:
        await store.aclose()


async def test_aclose_stops_the_watcher_and_the_signal_handler(policy_file: Path) -> None:
    previous = signal.getsignal(signal.SIGHUP)
    store = PolicyStore([policy_file], {}, poll_seconds=0.01)
    await store.start()
    await store.aclose()
    assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, previous)
    old = store.engine
    write(policy_file, ALLOW_BOB)
    await anyio.sleep(0.1)  # ten polls of a watcher that should be gone
    assert store.engine is old


async def test_no_watcher_when_watching_is_off(policy_file: Path) -> None:
    store = PolicyStore([policy_file], {}, watch=False, poll_seconds=0.01)
    await store.start()
    try:
        old = store.engine
        write(policy_file, ALLOW_BOB)
        await anyio.sleep(0.1)
        assert store.engine is old
    finally:
        await store.aclose()
