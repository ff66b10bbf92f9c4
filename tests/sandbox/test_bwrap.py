"""The bwrap command line and the startup check: what is bound, what is refused, failing closed."""

from __future__ import annotations

import sys
from pathlib import Path

import landlockpy
import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox import inner
from mcp_bastion.sandbox.bwrap import build_plan, with_fds
from mcp_bastion.sandbox.check import Report
from mcp_bastion.sandbox.launch import Sandbox
from mcp_bastion.sandbox.profile import SandboxSettings

SCRIPT = str(Path(__file__).resolve().parents[1] / "upstream" / "stdio_server.py")


def plan(tmp_path: Path, profile: SandboxSettings | None = None, **kw: object) -> tuple[list[str], dict[str, object]]:
    command = kw.pop("command", [sys.executable, SCRIPT])
    built = build_plan(
        "local",
        command,  # type: ignore[arg-type]
        env=kw.pop("env", {"PATH": "/usr/bin", "SECRET": "hunter2"}),  # type: ignore[arg-type]
        cwd=kw.pop("cwd", None),  # type: ignore[arg-type]
        profile=profile or SandboxSettings(),
        state_dir=tmp_path / "state",
        **kw,  # type: ignore[arg-type]
    )
    argv = list(built.argv)
    spec = inner.decode(argv[argv.index("--spec") + 1])
    return argv, {"env": built.env, "spec": spec, "read_only": built.read_only}


def binds(argv: list[str], option: str = "--ro-bind") -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_namespaces_capabilities_and_the_launcher(tmp_path: Path) -> None:
    argv, parts = plan(tmp_path)
    assert argv[0].endswith("bwrap")
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--seccomp") + 1] == "{fd:seccomp}"
    assert argv[argv.index("--tmpfs") + 1] == "/tmp"
    assert argv[-2:] == [sys.executable, SCRIPT]
    assert "-S" in argv
    assert "--spec" in argv
    assert parts["env"] == {"PATH": "/usr/bin", "SECRET": "hunter2"}
    assert not any("hunter2" in a for a in argv)  # argv is world-readable in /proc; the env is not


def test_only_what_the_command_needs_is_bound(tmp_path: Path) -> None:
    argv, _ = plan(tmp_path)
    bound = binds(argv)
    assert SCRIPT in bound or any(SCRIPT.startswith(b + "/") for b in bound)
    assert sys.base_prefix in bound or any(sys.base_prefix.startswith(b + "/") for b in bound)
    for secret in ("/etc", "/home", "/root"):
        assert secret not in bound
    assert not any(b.startswith("/etc/shadow") for b in binds(argv, "--ro-bind-try"))
    assert "/etc/resolv.conf" not in binds(argv, "--ro-bind-try")
    for outer in bound:  # no bind inside another
        assert not any(other != outer and other.startswith(outer + "/") for other in bound)


def test_the_data_dir_is_the_one_writable_directory(tmp_path: Path) -> None:
    argv, parts = plan(tmp_path, SandboxSettings(data_dir=Path("files")))
    data = str(tmp_path / "state" / "sandbox" / "files")
    assert binds(argv, "--bind") == [data]
    assert parts["spec"]["writable"] == ["/tmp", data]  # type: ignore[index]
    assert argv[argv.index("--chdir") + 1] == data


@pytest.mark.parametrize(
    "exposing",
    [
        pytest.param({"profile": SandboxSettings(read_only=(Path("/"),))}, id="read-only-root"),
        pytest.param({"env": {"PYTHONPATH": "{tmp}"}}, id="pythonpath-holding-the-state"),
        pytest.param({"cwd": "{tmp}"}, id="cwd-holding-the-state"),
        pytest.param({"profile": SandboxSettings(data_dir=Path(".."))}, id="data-dir-is-the-state"),
    ],
)
def test_nothing_may_expose_the_state_directory(tmp_path: Path, exposing: dict[str, object]) -> None:
    (tmp_path / "state").mkdir()
    kw = {
        key: {k: v.format(tmp=tmp_path) for k, v in value.items()}
        if isinstance(value, dict)
        else Path(str(value).format(tmp=tmp_path))
        if isinstance(value, str)
        else value
        for key, value in exposing.items()
    }
    with pytest.raises(ConfigError, match="state director"):
        plan(tmp_path, **kw)  # type: ignore[arg-type]


def test_the_proxy_profile_binds_the_egress_socket_and_sets_the_proxy(tmp_path: Path) -> None:
    profile = SandboxSettings(network="proxy", egress=("example.com:443",))
    sock = tmp_path / "egress.sock"
    argv, parts = plan(tmp_path, profile, egress_socket=sock)
    i = argv.index(str(sock))
    assert argv[i - 1 : i + 2] == ["--ro-bind", str(sock), "/run/egress.sock"]
    env = parts["env"]
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"  # type: ignore[index]
    assert "/etc/resolv.conf" not in binds(argv, "--ro-bind-try")
    with pytest.raises(ConfigError):
        plan(tmp_path, profile)


def test_fd_placeholders_are_filled() -> None:
    assert with_fds(["--seccomp", "{fd:seccomp}", "x"], {"seccomp": 7}) == ["--seccomp", "7", "x"]


def test_the_launcher_mirrors_landlock_h() -> None:
    for abi, mask in inner.FS_BY_ABI.items():
        assert mask == landlockpy.fs_for_abi(abi)
    assert landlockpy.net_for_abi(4) == inner.NET_TCP
    assert landlockpy.scope_for_abi(6) == inner.SCOPES
    assert int(landlockpy.AccessNet.CONNECT_TCP) == inner.CONNECT_TCP


def report(**kw: object) -> Report:
    fields: dict[str, object] = {
        "bwrap": "/usr/bin/bwrap",
        "namespaces": None,
        "seccomp": None,
        "landlock_abi": 7,
        "pids_cgroup": True,
        "nproc_enforced": False,
    }
    return Report(**{**fields, **kw})  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("gap", "named"),
    [
        ({"bwrap": None}, "apt-get install -y bubblewrap"),
        ({"namespaces": "No permissions to create new namespace"}, "user namespaces"),
        ({"seccomp": "libseccomp missing"}, "seccomp"),
    ],
)
async def test_a_missing_layer_fails_closed(tmp_path: Path, gap: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await Sandbox("local", SandboxSettings(), state_dir=tmp_path).check(report(**gap))
    assert named in caught.value.detail
    assert "dangerously_disabled" in caught.value.detail


@pytest.mark.anyio
async def test_messages_name_the_upstream_or_the_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as upstream:
        await Sandbox("files", SandboxSettings(), state_dir=tmp_path).check(report(bwrap=None))
    assert upstream.value.detail.startswith("upstreams.files: the sandbox cannot start")
    assert 'set upstreams.files.sandbox = "dangerously_disabled"' in upstream.value.detail
    # `sandbox run --profile web`: no upstream is involved, and none is named.
    named = Sandbox("run", SandboxSettings(), state_dir=tmp_path, where="sandbox profile 'web'")
    with pytest.raises(ConfigError) as profile:
        await named.check(report(bwrap=None))
    assert profile.value.detail.startswith("sandbox profile 'web': the sandbox cannot start")
    assert "upstreams.run" not in profile.value.detail


@pytest.mark.anyio
async def test_an_old_landlock_only_warns(tmp_path: Path) -> None:
    sandbox = Sandbox("local", SandboxSettings(), state_dir=tmp_path)
    assert await sandbox.check(report()) == []
    assert any("TCP" in w for w in await sandbox.check(report(landlock_abi=3)))
    assert any("Landlock" in w for w in await sandbox.check(report(landlock_abi=0)))
    assert any("process limit" in w for w in await sandbox.check(report(pids_cgroup=False)))
