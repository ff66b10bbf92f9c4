"""The bubblewrap command line of a sandboxed server: what the server sees, and nothing more.

    bwrap --unshare-all --disable-userns --die-with-parent --new-session --cap-drop ALL
          --proc /proc --dev /dev --tmpfs /tmp                 first: what is bound below may live under /tmp
          --ro-bind /usr /usr  --symlink usr/bin /bin ...     the system's programs and libraries
          --ro-bind-try /etc/ld.so.cache ...                  a handful of /etc files, never secrets
          --ro-bind-data FD /etc/passwd                       synthetic: one "sandbox" user
          --ro-bind <python prefix, venv, command, script, PYTHONPATH entries, read_only paths>
          [--bind <data_dir>] [--ro-bind <egress socket> /run/egress.sock]
          --chdir <cwd | data_dir | /tmp> --seccomp FD
          -- <python> -I -S -c <run mcp_bastion.sandbox.inner> --spec <hex> -- <command...>

The root is bubblewrap's own empty tmpfs: the host's home, ``/etc`` secrets, ``/run``, ``/var`` and the
gateway's state directory simply do not exist inside. Which host paths a command needs is found from the
command: its program (through ``PATH``) and, for a script, its interpreter (``#!``); a program inside a
Python virtual environment brings the environment and its base interpreter; absolute file arguments (the
script) and the declared ``PYTHONPATH`` entries are bound too. A path that would expose the gateway's state
directory is refused (``ConfigError``).

The environment is not on this command line (it may carry secrets, and argv is world-readable in /proc):
bwrap is started with exactly the server's environment and passes it on.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import mcp_bastion
from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox import inner
from mcp_bastion.sandbox.profile import PROXY_PORT, PROXY_SOCKET, SandboxSettings

SYSTEM_DIRS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Programs and libraries: bound read-only (or recreated as the symlinks they are on merged-/usr systems)."""

ETC_FILES: Final = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
    "/etc/mime.types",
)
"""The /etc entries a program commonly reads at startup, none of them secret."""

ETC_NETWORK_FILES: Final = ("/etc/ssl/certs", "/etc/ca-certificates", "/etc/pki/tls/certs", "/etc/hosts")
"""Trust roots and hosts, for servers that reach the network through the proxy."""

PASSWD: Final = b"sandbox:x:65534:65534:sandbox:/tmp:/usr/sbin/nologin\n"
GROUP: Final = b"sandbox:x:65534:\n"

INNER_MODULE: Final = "mcp_bastion.sandbox.inner"

TMP: Final = "/tmp"  # noqa: S108 (the sandbox's own private tmpfs, not the host's)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything needed to start one sandboxed child: argv, the data files bwrap reads from fds, env."""

    argv: tuple[str, ...]
    env: dict[str, str]
    data: dict[str, bytes] = field(default_factory=dict)
    """Name of a ``{fd:NAME}`` placeholder in ``argv`` → the bytes the fd must hold (seccomp BPF, passwd)."""
    read_only: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()


def interpreter_paths() -> list[Path]:
    """What this gateway's own interpreter needs to run ``mcp_bastion.sandbox.inner``: its prefixes and the
    directory the ``mcp_bastion`` package is imported from."""
    package_root = Path(mcp_bastion.__file__).resolve().parent.parent
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix), package_root}
    paths.add(Path(sys.executable).parent)
    return sorted(p for p in paths if not _under_system(p))


def program_paths(program: str, path_env: str, cwd: Path | None) -> list[Path]:
    """Host paths a program needs beyond the system directories: the file (and its real path), a virtual
    environment it lives in and that environment's base interpreter, and a ``#!`` interpreter."""
    if os.sep in program:
        found: str | None = str((cwd or Path.cwd()) / program)
    else:
        found = shutil.which(program, path=path_env)
    if found is None:
        return []
    paths: list[Path] = []
    location = Path(os.path.abspath(found))
    for candidate in (location, location.resolve()):
        if not _under_system(candidate):
            paths.append(candidate)
        venv = candidate.parent.parent
        if candidate.parent.name == "bin" and (venv / "pyvenv.cfg").is_file():
            paths.append(venv)
            paths.extend(_venv_home(venv / "pyvenv.cfg"))
    interpreter = _shebang(location)
    if interpreter is not None and interpreter != program:
        paths.extend(program_paths(interpreter, path_env, cwd))
    return paths


def _venv_home(cfg: Path) -> list[Path]:
    for line in cfg.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home":
            home = Path(value.strip())
            # home is the base interpreter's bin directory: its prefix holds the standard library.
            prefix = home.parent if home.name == "bin" else home
            return [p for p in (prefix, prefix.resolve()) if not _under_system(p)]
    return []


def _shebang(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            head = file.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:
        return words[1]
    return words[0]


def _under_system(path: Path) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in SYSTEM_DIRS)


def _exposes(path: Path, secret: Path) -> bool:
    """Whether binding ``path`` would show ``secret`` (or something inside it) to the server."""
    path, secret = path.resolve(), secret.resolve()
    return path == secret or path in secret.parents or secret in path.parents


def command_paths(command: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> list[Path]:
    """The host paths a command needs: its program (see ``program_paths``), absolute file arguments and the
    declared ``PYTHONPATH`` entries."""
    paths = program_paths(command[0], env.get("PATH", os.defpath), cwd)
    for argument in command[1:]:
        if argument.startswith("/") and os.path.isfile(argument):
            paths.append(Path(argument))
    for entry in env.get("PYTHONPATH", "").split(os.pathsep):
        if entry and os.path.isabs(entry) and os.path.exists(entry):
            paths.append(Path(entry))
    return paths


def build_plan(
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    profile: SandboxSettings,
    state_dir: Path,
    egress_socket: Path | None = None,
    landlock: bool = True,
    python: str | None = None,
    join_group: bool = False,
) -> Plan:
    """The bwrap command line (and environment) that runs ``command`` under ``profile``.

    ``state_dir`` is what must stay invisible; ``egress_socket`` is the proxy's Unix socket on the host
    (``network = "proxy"``); ``landlock`` says whether the launcher applies a Landlock ruleset.
    """
    data_dir = profile.resolved_data_dir(state_dir)
    needed = [*interpreter_paths(), *command_paths(command, env, cwd), *profile.read_only]
    if cwd is not None:
        needed.append(cwd)
    read_only: list[str] = []
    for path in needed:
        if _exposes(path, state_dir) and not (data_dir is not None and path == data_dir):
            raise ConfigError(
                f"upstreams.{name}.sandbox: {str(path)!r} would expose the gateway's state directory "
                f"{str(state_dir)!r} to the server (move the state directory or the server)"
            )
        text = os.path.abspath(path)
        if not _under_system(Path(text)):
            read_only.append(text)
    read_only = _outermost(read_only)
    if data_dir is not None and data_dir.resolve() == state_dir.resolve():
        raise ConfigError(f"upstreams.{name}.sandbox.data_dir must not be the state directory")
    if data_dir is not None and data_dir.resolve() in state_dir.resolve().parents:
        raise ConfigError(f"upstreams.{name}.sandbox.data_dir must not contain the state directory")
    for path in profile.read_only:
        if not path.exists():
            raise ConfigError(f"upstreams.{name}.sandbox.read_only: {str(path)!r} does not exist")

    argv: list[str] = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]
    # The private /tmp first: a program (a checkout, a venv) that lives under the host's /tmp is bound on
    # top of it below, instead of being hidden by it.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", TMP]
    argv += _system_binds()
    for entry in ETC_FILES + (ETC_NETWORK_FILES if profile.network == "proxy" else ()):
        argv += _etc_bind(entry)
    argv += ["--perms", "0444", "--ro-bind-data", "{fd:passwd}", "/etc/passwd"]
    argv += ["--perms", "0444", "--ro-bind-data", "{fd:group}", "/etc/group"]
    for bound in read_only:
        argv += ["--ro-bind", bound, bound]
    writable = [TMP]
    if data_dir is not None:
        argv += ["--bind", str(data_dir), str(data_dir)]
        writable.append(str(data_dir))
    server_env = dict(env)
    if profile.network == "proxy":
        if egress_socket is None:
            raise ConfigError(f'upstreams.{name}.sandbox: network = "proxy" needs the egress proxy')
        argv += ["--ro-bind", str(egress_socket), PROXY_SOCKET]
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            server_env[variable] = server_env[variable.lower()] = proxy
        server_env.setdefault("NO_PROXY", "")
    chdir = str(cwd) if cwd is not None else str(data_dir) if data_dir is not None else TMP
    argv += ["--remount-ro", "/", "--chdir", chdir, "--seccomp", "{fd:seccomp}", "--"]
    visible = [*_existing(SYSTEM_DIRS), *_existing(ETC_FILES), *read_only, "/etc/passwd", "/etc/group"]
    if profile.network == "proxy":
        visible += _existing(ETC_NETWORK_FILES)
    spec = {
        "read_only": visible,
        "writable": writable,
        "devices": ["/dev"],
        "proc": "/proc",
        "network": profile.network,
        "proxy_port": PROXY_PORT,
        "proxy_socket": PROXY_SOCKET,
        "landlock": landlock,
        # bwrap sets PWD after --chdir; the server's environment is only what was declared.
        "unset": [] if "PWD" in env else ["PWD"],
        "rlimits": {
            "memory_mb": profile.memory_mb,
            "cpu_seconds": profile.cpu_seconds,
            "processes": profile.processes,
            "open_files": profile.open_files,
            "file_size_mb": profile.file_size_mb,
        },
    }
    # -S: no site (its .pth files cost ~6 ms a spawn); the launcher needs only the standard library.
    root = str(Path(mcp_bastion.__file__).resolve().parent.parent)
    boot = f"import sys; sys.path.insert(0, {root!r}); from {INNER_MODULE} import main; main()"
    argv += [python or sys.executable, "-I", "-S", "-c", boot, "--spec", inner.encode(spec)]
    if join_group:
        argv += ["--join", "{fd:cgroup}"]  # the pids group's cgroup.procs (see sandbox/cgroup.py)
    argv += ["--", *command]
    return Plan(
        tuple(argv),
        server_env,
        data={"passwd": PASSWD, "group": GROUP},
        read_only=tuple(read_only),
        writable=tuple(writable),
    )


def _system_binds() -> list[str]:
    args: list[str] = []
    for entry in SYSTEM_DIRS:
        if os.path.islink(entry):
            args += ["--symlink", os.readlink(entry), entry]
        elif os.path.isdir(entry):
            args += ["--ro-bind", entry, entry]
    return args


def _etc_bind(entry: str) -> list[str]:
    """Bind ``entry``; a link into the system directories stays a link (its target is there already): the
    time zone's name is where /etc/localtime points, and a bind would leave only the zone's data."""
    if os.path.islink(entry):
        link = os.readlink(entry)
        target = os.path.normpath(os.path.join(os.path.dirname(entry), link))
        if _under_system(Path(target)) and _under_system(Path(os.path.realpath(entry))):
            return ["--symlink", link, entry]
    return ["--ro-bind-try", entry, entry]


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths without duplicates and without those inside another (binding the outer one shows them)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _existing(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


def with_fds(argv: Sequence[str], fds: Mapping[str, int]) -> list[str]:
    """``argv`` with each ``{fd:NAME}`` placeholder replaced by the number of the fd holding NAME's data."""
    return [str(fds[a[4:-1]]) if a.startswith("{fd:") and a.endswith("}") else a for a in argv]
