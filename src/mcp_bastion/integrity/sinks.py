"""Sink-aware argument checks: an argument that a tool will use as a file path, a command line, SQL or a
URL is checked for what attacks that sink, after the pinned-schema check. Refuse, never rewrite: the
gateway does not know how the tool would read a repaired value.

Kinds (``SinkSettings.kind``; a refusal is ``UnsafeArgument`` with reason ``argument_unsafe_<kind>``):
- ``path``: no control characters (NUL included), backslashes, ``%XX`` escapes (percent, double and
  overlong-UTF-8 encodings all start with one), ``..`` segments (also after NFKC folding: ``．．／``,
  ``‥``), segments of dots and spaces only, leading ``~`` (home) or ``-`` (an option to whatever command
  gets it), Windows drive (``C:``) or UNC (``//host``) forms. With ``roots``: an absolute path must lie
  inside one after POSIX normalisation (relative paths only with ``allow_relative``, taken from the first
  root); where a root exists on this machine, symlinks are resolved too and must not lead out (best effort:
  a link made after the check is the sandbox's to stop). Roots that do not exist here (the server runs
  elsewhere) get the lexical confinement only.
- ``shell``: no shell metacharacters (``; | & $ ` < > ( ) { } [ ] * ? \\``, control characters, ``#`` or
  ``~`` starting a word), quotes balanced (``shlex``); the first word never starts with ``-`` (so a single
  argument such as a git revision is a ``shell`` sink too: ``--output=…`` is refused); with
  ``allowed_commands`` argv[0] must be one of them; with ``refuse_options`` no word may start with ``-``.
- ``sql`` / ``sql_identifier``: see ``integrity.sqltext``.
- ``url``: an absolute ``https`` URL (``http`` with ``allow_http``), no userinfo, no whitespace, control
  characters or backslashes; then the SSRF guard (``netguard.check_host``) resolves the host and refuses
  loopback, private, link-local, metadata and other non-public addresses, and non-canonical IP literals
  (``2130706433``, ``0x7f000001``), unless the sink's options allow them. The upstream resolves the name
  again when it fetches: DNS rebinding between the two is stopped only where the upstream's own egress
  goes through the guard (the sandbox's egress proxy, issue 8).

Inferred sinks (``integrity.inference``, from the *pinned* ``inputSchema``) are the conservative ones:
``url`` allows ``http`` and no private addresses; ``sql`` uses the generic dialect, read-only when the tool
is (its ``read_only`` setting, else its ``readOnlyHint``); ``shell`` has no allow-list; ``path`` has no
roots, so only the lexical checks (traversal, encodings, NUL, ``~``, ``-``, Windows forms) apply and
absolute paths pass: the server's own allowed directories are not known here. A configured sink replaces
the inferred one of the same key; ``kind = "none"`` turns it off. A tool that is not pinned gets its
configured sinks only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import re
import shlex
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, final
from urllib.parse import urlsplit

from mcp_bastion import netguard
from mcp_bastion.errors import ConfigError, UnsafeArgument
from mcp_bastion.integrity.inference import Inferred, infer
from mcp_bastion.integrity.sqltext import Dialect, check_identifier, check_sql
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.settings import SinkSettings, ToolSettings, UpstreamSettings

logger = logging.getLogger(__name__)

URL_LOOKUP_TIMEOUT: Final = 3.0
"""Seconds all the DNS lookups of one call's URL arguments may take together; then the call is refused."""
MAX_CACHE: Final = 4096

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_PERCENT: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE: Final = re.compile(r"[A-Za-z]:")
_DOTS: Final = re.compile(r"[.\s]*\.\.[.\s]*")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@final
@dataclass(frozen=True, slots=True)
class PathSink:
    kind: ClassVar[str] = "path"
    roots: tuple[str, ...] = ()
    """Normalised absolute POSIX directories."""
    allow_relative: bool = False
    resolve_symlinks: bool = True

    def check(self, value: str) -> None:
        problem = _path_problem(value)
        if problem is None and self.roots:
            problem = self._confinement_problem(value)
        if problem is not None:
            raise UnsafeArgument(f"path: {problem}", reason="argument_unsafe_path")

    def _confinement_problem(self, value: str) -> str | None:
        if not value.startswith("/"):
            if not self.allow_relative:
                return "a relative path where roots are configured"
            value = posixpath.join(self.roots[0], value)
        normal = posixpath.normpath(value)
        if not any(_inside(normal, root) for root in self.roots):
            return "outside the allowed roots"
        local = [root for root in self.roots if self.resolve_symlinks and os.path.isdir(root)]
        if local and any(_inside(normal, root) for root in local):
            try:
                real = os.path.realpath(normal)
                if not any(_inside(real, os.path.realpath(root)) for root in local):
                    return "a symlink leads outside the allowed roots"
            except OSError:
                return "cannot be resolved"
        return None


def _path_problem(value: str) -> str | None:
    """What makes ``value`` unsafe as a path whatever the roots (None: nothing)."""
    if not value:
        return "empty"
    if _CONTROL.search(value):
        return "a control character"
    if _PERCENT.search(value):
        return "a percent-encoded character"
    folded = unicodedata.normalize("NFKC", value)
    if "\\" in folded:
        return "a backslash"
    if folded.count("/") != value.count("/"):
        return "a look-alike slash"
    if any(_DOTS.fullmatch(segment) for segment in folded.split("/")):
        return "a '..' segment"
    if folded.startswith("~"):
        return "a home-relative path"
    if folded.startswith("-"):
        return "starts with '-'"
    if _DRIVE.match(folded) or folded.startswith("//"):
        return "a Windows drive or UNC form"
    return None


_SHELL_META: Final = re.compile(r"[;|&$`<>(){}\[\]*?\\\x00-\x08\x0a-\x1f\x7f]|(?:^|\s)[#~]")


@final
@dataclass(frozen=True, slots=True)
class ShellSink:
    kind: ClassVar[str] = "shell"
    allowed_commands: frozenset[str] = frozenset()
    refuse_options: bool = False

    def check(self, value: str) -> None:
        if _SHELL_META.search(value):
            raise UnsafeArgument("shell: a shell metacharacter", reason="argument_unsafe_shell")
        try:
            argv = shlex.split(value)
        except ValueError:
            raise UnsafeArgument("shell: unbalanced quotes", reason="argument_unsafe_shell") from None
        if not argv:
            raise UnsafeArgument("shell: empty", reason="argument_unsafe_shell")
        if argv[0].startswith("-") or (self.refuse_options and any(word.startswith("-") for word in argv)):
            raise UnsafeArgument("shell: an option where none may be", reason="argument_unsafe_shell")
        if self.allowed_commands and argv[0] not in self.allowed_commands:
            raise UnsafeArgument("shell: a command not on the allow-list", reason="argument_unsafe_shell")


@final
@dataclass(frozen=True, slots=True)
class SQLSink:
    kind: ClassVar[str] = "sql"
    dialect: Dialect = "generic"
    read_only: bool = False

    def check(self, value: str) -> None:
        check_sql(value, dialect=self.dialect, read_only=self.read_only)


@final
@dataclass(frozen=True, slots=True)
class IdentifierSink:
    kind: ClassVar[str] = "sql_identifier"
    dialect: Dialect = "generic"

    def check(self, value: str) -> None:
        check_identifier(value, dialect=self.dialect)


_URL_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f\\]")
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


@final
@dataclass(frozen=True, slots=True)
class URLSink:
    kind: ClassVar[str] = "url"
    schemes: frozenset[str] = frozenset({"https"})
    policy: netguard.Policy = field(default_factory=netguard.Policy)

    def check(self, value: str) -> None:
        self.target(value)

    def target(self, value: str) -> tuple[str, int]:
        """The host and port the URL names; ``UnsafeArgument`` for anything but a plain absolute URL."""
        if _URL_FORBIDDEN.search(value):
            raise UnsafeArgument("url: whitespace, a control character or a backslash", reason="argument_unsafe_url")
        try:
            parts = urlsplit(value)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            raise UnsafeArgument("url: malformed", reason="argument_unsafe_url") from None
        if scheme not in self.schemes:
            raise UnsafeArgument("url: a scheme not allowed", reason="argument_unsafe_url")
        if "@" in parts.netloc:
            raise UnsafeArgument("url: userinfo", reason="argument_unsafe_url")
        if not host:
            raise UnsafeArgument("url: no host", reason="argument_unsafe_url")
        return host, port if port is not None else _DEFAULT_PORTS[scheme]

    async def vet(self, value: str, *, lookup_timeout: float = URL_LOOKUP_TIMEOUT) -> None:
        """Resolve the host and raise ``UnsafeArgument`` unless every address is allowed."""
        host, port = self.target(value)
        try:
            await netguard.check_host(host, port, self.policy, lookup_timeout=lookup_timeout)
        except netguard.SSRFBlocked as exc:
            raise UnsafeArgument(
                f"url: refused by the SSRF guard ({exc.reason})", reason="argument_unsafe_url"
            ) from None
        except OSError:
            raise UnsafeArgument("url: the host does not resolve in time", reason="argument_unsafe_url") from None


Sink = PathSink | ShellSink | SQLSink | IdentifierSink | URLSink
Pointer = tuple[str, ...]
"""An argument's JSON pointer as segments; ``*`` stands for every item of an array or object."""


def sink_of(settings: SinkSettings, *, read_only: bool) -> Sink | None:
    """The check a configured sink asks for (None: ``kind = "none"``); ``read_only``: the tool's."""
    match settings.kind:
        case "path":
            roots = tuple(posixpath.normpath(root) for root in settings.roots)
            return PathSink(roots, settings.allow_relative, settings.resolve_symlinks)
        case "shell":
            return ShellSink(frozenset(settings.allowed_commands), settings.refuse_options)
        case "sql":
            return SQLSink(settings.dialect, read_only if settings.read_only is None else settings.read_only)
        case "sql_identifier":
            return IdentifierSink(settings.dialect)
        case "url":
            policy = netguard.Policy(
                allow_loopback=settings.allow_loopback,
                allow_private=settings.allow_private,
                allowed_hosts=frozenset(settings.allowed_hosts),
                allowed_networks=netguard.networks(settings.allowed_networks),
            )
            return URLSink(frozenset({"https", "http"} if settings.allow_http else {"https"}), policy)
    return None


def parse_pointer(key: str) -> Pointer:
    """An argument name (``path``) or an RFC 6901 JSON pointer (``/paths/*``) as segments."""
    if not key:
        raise ValueError("an empty argument key")
    if not key.startswith("/"):
        return (key,)
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in key[1:].split("/"))


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def values_at(node: JSONValue, pointer: Pointer, path: str = "") -> Iterator[tuple[str, JSONValue]]:
    """Every (JSON path, value) the pointer selects; nothing where the arguments do not have it."""
    if not pointer:
        yield path or "/", node
        return
    head, rest = pointer[0], pointer[1:]
    children: list[tuple[str, JSONValue]] = []
    if isinstance(node, dict):
        children = [(k, v) for k, v in node.items()] if head == "*" else [(head, node[head])] if head in node else []
    elif isinstance(node, list):
        if head == "*":
            children = [(str(index), item) for index, item in enumerate(node)]
        elif head.isdigit() and int(head) < len(node):
            children = [(head, node[int(head)])]
    for key, child in children:
        yield from values_at(child, rest, f"{path}/{_escape(key)}")


def _strings(path: str, value: JSONValue, kind: str) -> Iterator[tuple[str, str]]:
    """The strings a sink checks in one selected value: itself, or each item of an array (null: none)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(f"{path}/{index}", item, kind)
    elif value is not None:
        # Only strings can be checked; anything else where a sink is configured is refused (fail closed).
        raise UnsafeArgument(f"{kind}: not a string", reason=f"argument_unsafe_{kind}", path=path)


def inferred_sink(kind: Inferred, *, read_only: bool) -> Sink:
    """The check an inferred sink gets: the conservative options (module docstring)."""
    match kind:
        case "url":
            return URLSink(frozenset({"https", "http"}))
        case "sql":
            return SQLSink("generic", read_only)
        case "shell":
            return ShellSink()
    return PathSink()


def _read_only(settings: ToolSettings | None, definition: Mapping[str, Any] | None) -> bool:
    if settings is not None and settings.read_only is not None:
        return settings.read_only
    annotations = definition.get("annotations") if definition is not None else None
    return isinstance(annotations, dict) and annotations.get("readOnlyHint") is True


@final
class SinkChecker:
    """The sinks of each (server, tool, pinned definition), compiled once; ``check`` runs them on a call."""

    def __init__(
        self,
        tools: Mapping[str, Mapping[str, ToolSettings]] | None = None,
        *,
        infer: bool = True,
        lookup_timeout: float = URL_LOOKUP_TIMEOUT,
    ) -> None:
        self._tools = tools or {}
        self._infer = infer
        self._lookup_timeout = lookup_timeout
        self._cache: dict[tuple[str, str, str], tuple[tuple[Pointer, Sink], ...]] = {}
        for server, by_tool in self._tools.items():
            for tool, settings in by_tool.items():
                for key in settings.sinks:
                    try:
                        parse_pointer(key)
                    except ValueError as exc:
                        raise ConfigError(f"upstreams.{server}.tools.{tool}.sinks: {exc}") from None

    @classmethod
    def from_settings(cls, upstreams: Mapping[str, UpstreamSettings]) -> SinkChecker:
        return cls({name: upstream.tools for name, upstream in upstreams.items()})

    def sinks(
        self, server: str, tool: str, definition: Mapping[str, Any] | None = None, digest: str = ""
    ) -> tuple[tuple[Pointer, Sink], ...]:
        """The (pointer, sink) pairs of a tool: inferred from ``definition`` (its pin), then configured."""
        key = (server, tool, digest if definition is not None else "")
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        settings = self._tools.get(server, {}).get(tool)
        read_only = _read_only(settings, definition)
        bound: dict[Pointer, Sink | None] = {}
        if self._infer and definition is not None:
            inferred = infer(definition)
            if inferred:
                logger.info("%s/%s: inferred sinks %s", server, tool, inferred)
            bound.update({(name,): inferred_sink(kind, read_only=read_only) for name, kind in inferred.items()})
        for text, sink_settings in (settings.sinks if settings is not None else {}).items():
            bound[parse_pointer(text)] = sink_of(sink_settings, read_only=read_only)
        cached = tuple((pointer, sink) for pointer, sink in bound.items() if sink is not None)
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[key] = cached
        return cached

    async def check(
        self,
        server: str,
        tool: str,
        arguments: JSONValue,
        *,
        definition: Mapping[str, Any] | None = None,
        digest: str = "",
    ) -> None:
        """Raise ``UnsafeArgument`` (with the argument's JSON path) if any argument is unsafe for its sink."""
        sinks = self.sinks(server, tool, definition, digest)
        if not sinks or not isinstance(arguments, dict):
            return
        urls: list[tuple[str, URLSink, str]] = []
        for pointer, sink in sinks:
            for selected, value in values_at(arguments, pointer):
                for path, text in _strings(selected, value, sink.kind):
                    try:
                        sink.check(text)
                    except UnsafeArgument as exc:
                        raise UnsafeArgument(exc.detail, reason=exc.reason, path=path) from None
                    if isinstance(sink, URLSink):
                        urls.append((path, sink, text))
        if not urls:
            return
        current = urls[0][0]
        try:
            async with asyncio.timeout(self._lookup_timeout):  # one budget for all of this call's lookups
                for path, sink, text in urls:
                    current = path
                    await sink.vet(text, lookup_timeout=self._lookup_timeout)
        except UnsafeArgument as exc:
            raise UnsafeArgument(exc.detail, reason=exc.reason, path=current) from None
        except TimeoutError:
            raise UnsafeArgument("url: lookups took too long", reason="argument_unsafe_url", path=current) from None
