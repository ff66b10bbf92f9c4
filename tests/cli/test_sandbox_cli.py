"""``mcp-bastion sandbox run|check --profile``: which profile a command runs in, and what is refused.

The resolution tests replace the spawn (``cli.sandbox._run``) and read the ``Sandbox`` it was given; one
test runs a real command in a named profile through bubblewrap, when this machine can.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_bastion.cli import sandbox as sandbox_cli
from mcp_bastion.cli.main import app
from mcp_bastion.sandbox.check import Report, probe
from mcp_bastion.sandbox.launch import Sandbox
from mcp_bastion.sandbox.profile import SandboxSettings
from tests.helpers.procs import child_env

CONFIG = """\
[server]
state_dir = "{state}"

[sandbox.profiles.big]
memory_mb = 1024
data_dir = "scratch"

[sandbox.profiles.web]
network = "proxy"
egress = ["api.github.com:443"]

[upstreams.local]
command = ["server"]
env = {{ TOKEN = "t" }}
sandbox = {{ profile = "big", memory_mb = 2048 }}

[upstreams.loose]
command = ["server"]
sandbox = "dangerously_disabled"

[upstreams.remote]
url = "https://remote.example/mcp"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


@dataclasses.dataclass
class Spawned:
    sandbox: Sandbox
    command: list[str]
    env: dict[str, str]


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Spawned]:
    """What ``sandbox run`` would have started (nothing is)."""
    calls: list[Spawned] = []

    async def fake_run(sandbox: Sandbox, command: list[str], env: dict[str, str], cwd: Path | None) -> int:
        calls.append(Spawned(sandbox, command, env))
        return 7

    monkeypatch.setattr(sandbox_cli, "_run", fake_run)
    return calls


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sandbox", *args])
    return result.exit_code, result.output


def test_run_in_a_named_profile(config: Path, spawned: list[Spawned]) -> None:
    code, output = invoke("run", "--profile", "big", "-c", str(config), "--", "tool", "--flag")
    assert code == 7, output  # the command's status
    [call] = spawned
    assert call.sandbox.profile == SandboxSettings(memory_mb=1024, data_dir=Path("scratch"))
    assert call.command == ["tool", "--flag"]
    assert "TOKEN" not in call.env  # a profile carries no upstream's environment


def test_run_in_a_built_in_profile_needs_no_config(spawned: list[Spawned]) -> None:
    code, output = invoke("run", "--profile", "strict", "--", "true")
    assert code == 7, output
    assert spawned[0].sandbox.profile == SandboxSettings()
    assert invoke("run", "--", "true")[0] == 7
    assert spawned[1].sandbox.profile == SandboxSettings()


def test_run_in_an_upstreams_resolved_profile(config: Path, spawned: list[Spawned]) -> None:
    code, output = invoke("run", "--upstream", "local", "-c", str(config), "--", "server")
    assert code == 7, output
    [call] = spawned
    assert call.sandbox.profile == SandboxSettings(memory_mb=2048, data_dir=Path("scratch"))  # big, overridden
    assert call.env["TOKEN"] == "t"


def test_an_unconfined_upstream_runs_strict_and_says_so(config: Path, spawned: list[Spawned]) -> None:
    code, output = invoke("run", "--upstream", "loose", "-c", str(config), "--", "server")
    assert code == 7, output
    assert spawned[0].sandbox.profile.strict
    assert 'upstreams.loose.sandbox is "dangerously_disabled"; running it strict' in output


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        pytest.param(["--profile", "big", "--upstream", "local"], "give --profile or --upstream, not both", id="both"),
        pytest.param(["--profile", "dangerously_disabled"], "is for debugging a sandbox", id="unconfined"),
        pytest.param(
            ["--profile", "nope"],
            "no sandbox profile 'nope' (known: strict, dangerously_disabled, big, web;",
            id="nope",
        ),
        pytest.param(["--upstream", "nope"], "no upstream 'nope'", id="no-upstream"),
        pytest.param(["--upstream", "remote"], "not a stdio server", id="http-upstream"),
    ],
)
def test_run_refuses(config: Path, spawned: list[Spawned], args: list[str], problem: str) -> None:
    code, output = invoke("run", *args, "-c", str(config), "--", "true")
    assert code == 2
    assert problem in output
    assert not spawned


def test_run_names_a_bad_config(tmp_path: Path, spawned: list[Spawned]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sandbox.profiles.strict]\nmemory_mb = 2048\n[upstreams.a]\ncommand = ["a"]\n')
    code, output = invoke("run", "--profile", "strict", "-c", str(path), "--", "true")
    assert code == 2
    assert "'strict' is a built-in profile" in output
    assert not spawned


def old_kernel() -> Report:
    return dataclasses.replace(probe(), bwrap="/usr/bin/bwrap", namespaces=None, seccomp=None, landlock_abi=3)


def test_check_for_a_named_profile(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_cli, "probe", old_kernel)
    code, output = invoke("check", "--profile", "web", "-c", str(config))
    assert code == 0, output
    assert "WARNING: Landlock TCP rules" in output
    assert "strict sandbox: available" in output
    code, output = invoke("check", "--profile", "dangerously_disabled", "-c", str(config))
    assert code == 0, output
    assert "profile dangerously_disabled: the server runs unconfined" in output
    assert "Landlock TCP rules" not in output
    code, output = invoke("check", "--profile", "nope", "-c", str(config))
    assert code == 2
    assert "no sandbox profile 'nope'" in output


@pytest.mark.timeout(60)
@pytest.mark.skipif(not probe().strict_ok, reason="the strict sandbox cannot run here (mcp-bastion sandbox check)")
def test_a_command_really_runs_in_the_named_profile(config: Path, tmp_path: Path) -> None:
    """Through bubblewrap: the named profile's address-space limit and data directory, and nothing else."""
    data = tmp_path / "state" / "sandbox" / "scratch"
    probe_code = (
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)\n"
        f"open({str(data / 'note')!r}, 'w').write('kept')\n"
        "try:\n    open('/escaped', 'w')\nexcept OSError:\n    print('root read-only')\n"
    )

    def run(profile: str) -> subprocess.CompletedProcess[str]:
        bastion = [sys.executable, "-m", "mcp_bastion", "sandbox", "run", "--profile", profile, "-c", str(config)]
        return subprocess.run(
            [*bastion, "--", sys.executable, "-c", probe_code],
            env={"PATH": "/usr/bin:/bin", **child_env()},
            capture_output=True,
            text=True,
            timeout=45,
            check=False,
        )

    big = run("big")
    assert big.returncode == 0, big.stderr
    assert big.stdout.split() == ["1024", "root", "read-only"]
    assert (data / "note").read_text() == "kept"  # the profile's data_dir, bound writable at the same path
    assert not Path("/escaped").exists()

    strict = run("strict")  # the default profile: 512 MB, and no data directory at all
    assert strict.returncode != 0
    assert strict.stdout.split() == ["512"]
    assert "FileNotFoundError" in strict.stderr  # the directory exists on the host, but is not bound in
