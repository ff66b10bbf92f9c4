"""Client ID Metadata Documents: a client whose ``client_id`` is an https URL, described by the JSON document
served at that URL, fetched through the SSRF guard and cached.

draft-ietf-oauth-client-id-metadata-document (-00, the revision MCP 2025-11-25 cites; -01 where it is
stricter): §3 the client identifier URL (https, a path, no dot segments, no fragment, no user info; a port
is fine; a query is discouraged but allowed), -01 §4 (only 200 OK is a document; redirects MUST NOT be
followed), §4.1 (``client_id`` equals the URL by simple string comparison; no shared-secret methods, no
``client_secret`` or ``client_secret_expires_at``), §4.4 (cache per HTTP cache headers within our own
bounds; error responses and invalid documents MUST NOT be cached), §6.5 (SSRF), §6.6 (5 KB recommended
maximum). MCP 2025-11-25 authorization, "Client ID Metadata Documents": the authorization server fetches
the document, MUST check the exact ``client_id`` match and validate redirect URIs against the document,
SHOULD cache it, and guards the fetch against SSRF.

Invariants:
- nothing is fetched unless the URL meets §3 and its host is one ``netguard`` can read unambiguously; the
  connection goes through ``netguard.connector`` (names vetted on resolution, every address again before
  ``connect()``), never through an environment proxy, without cookies, redirects or compression;
- ``timeout`` bounds the whole fetch (DNS, connect, TLS, headers, body) and ``max_bytes`` the body;
- the document is validated by ``oauth.registration`` (the dynamic registration rules), plus the draft's
  own: no shared secret, redirect URIs required;
- refusals are ``Refusal("invalid_client")`` whose ``reason`` names the rule; the description never quotes
  the fetched body, and every failure before an HTTP response (refused by the guard, unresolvable,
  unreachable, timed out) has the same description, so the endpoint is no oracle for internal DNS;
- a valid document is cached for its max-age clamped to ``[min_cache_seconds, max_cache_seconds]``
  (``cache_seconds`` without one); a failure that produced no HTTP response is cached for
  ``negative_cache_seconds``, since those are the costly ones to repeat; HTTP error responses and invalid
  documents are not cached (§4.4); concurrent resolutions of one URL share one fetch.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, final

import aiohttp
import orjson
import yarl

from mcp_bastion import netguard
from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import registration
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.store import ClientRecord

MAX_DOCUMENT_BYTES: Final = 5 * 1024
"""§6.6: the recommended maximum response size."""
MAX_URL_LENGTH: Final = 2000
MAX_CACHE_ENTRIES: Final = 1024
"""Anyone can make us fetch a URL of their choosing, so the cache is bounded (least recently used goes)."""
UNREACHABLE: Final = "the client ID metadata document could not be fetched"

_URL_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
"""RFC 3986 characters only: whitespace, backslashes and non-ASCII are where URL parsers disagree."""
_HTTPS_URL: Final = re.compile(
    r"https://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/?#\[\]@]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[^?#]*)?(?:\?(?P<query>[^#]*))?"
)
_ENCODED_TRICKS: Final = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)
_JSON_TYPE: Final = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")
_HEADERS: Final = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "mcp-bastion"}


def _refusal(reason: str, description: str) -> Refusal:
    return Refusal("invalid_client", reason, f"client_id: {description}")


def check_client_id(client_id: str) -> yarl.URL:
    """Apply the §3 rules to a client identifier URL; return the URL exactly as it will be requested."""
    if not client_id.startswith("https://"):
        raise _refusal("client_id_not_https", "a client ID metadata document URL must be https")
    if len(client_id) > MAX_URL_LENGTH or not _URL_CHARS.fullmatch(client_id):
        raise _refusal("client_id_malformed", "not a valid URL")
    if "#" in client_id:
        raise _refusal("client_id_fragment", "a client ID metadata document URL has no fragment")
    if "@" in re.split(r"[/?#]", client_id.removeprefix("https://"), maxsplit=1)[0]:
        raise _refusal("client_id_userinfo", "a client ID metadata document URL has no user info")
    match = _HTTPS_URL.fullmatch(client_id)
    if match is None:
        raise _refusal("client_id_malformed", "not a valid URL")
    host, port, path, query = match["host"], match["port"], match["path"] or "", match["query"]
    if path in ("", "/"):
        raise _refusal("client_id_no_path", "a client ID metadata document URL needs a path")
    if any(segment in (".", "..") for segment in path.split("/")) or _ENCODED_TRICKS.search(path):
        raise _refusal("client_id_path_trick", "dot segments and encoded separators are not allowed")
    if port is not None and not 0 < int(port) <= 65535:
        raise _refusal("client_id_malformed", "not a valid URL")
    try:
        netguard.parse_host(host)
    except netguard.SSRFBlocked as exc:
        raise _refusal(f"ssrf_{exc.reason}", "the host is not acceptable") from exc
    try:
        url = yarl.URL(client_id, encoded=True)
    except ValueError as exc:
        raise _refusal("client_id_malformed", "not a valid URL") from exc
    # aiohttp parses with yarl: refuse a URL the two parsers read differently, so the host we checked is the
    # host we connect to and the path we checked is the one we request.
    expected = (host.lower().strip("[]"), int(port or 443), path, query or "")
    if ((url.raw_host or "").lower(), url.port, url.raw_path, url.raw_query_string) != expected:
        raise _refusal("client_id_malformed", "not a valid URL")
    return url


def cache_lifetime(cache_control: str, *, default: float, minimum: float, maximum: float) -> float:
    """RFC 9111 §5.2.2.1 ``max-age`` (``no-store``/``no-cache``: zero), clamped to our own bounds (§4.4)."""
    directives: dict[str, str] = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    lifetime = default
    if "no-store" in directives or "no-cache" in directives:
        lifetime = 0.0
    elif directives.get("max-age", "").isdigit():
        lifetime = float(directives["max-age"])
    return min(max(lifetime, minimum), maximum)


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    description: str
    cause: BaseException | None

    def refusal(self) -> Refusal:
        # A fresh exception per raise: a cached one would gather every raiser's traceback.
        refusal = Refusal("invalid_client", self.reason, self.description)
        refusal.__cause__ = self.cause
        return refusal


@dataclass(frozen=True, slots=True)
class _Entry:
    expires_at: float
    record: ClientRecord | None = None
    document: Mapping[str, JSONValue] | None = None
    failure: _Failure | None = None


class _NoResponse(Exception):
    """The fetch failed before any HTTP response: cacheable for a short while."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


@final
class ClientMetadataResolver:
    """Fetches, validates and caches client ID metadata documents.

    ``resolve`` gives the client record (kind ``metadata``, ``expires_at`` when the cache entry ends);
    ``fetch`` gives the validated document, for ``oauth.server.MetadataDocuments``.
    """

    def __init__(
        self,
        policy: netguard.Policy,
        *,
        known_scopes: frozenset[str],
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        cache_seconds: float = 300.0,
        min_cache_seconds: float = 60.0,
        max_cache_seconds: float = 86400.0,
        negative_cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``known_scopes``: the scopes the gateway offers (a document's ``scope`` is limited to them)."""
        if not 0 <= min_cache_seconds <= cache_seconds <= max_cache_seconds:
            raise ConfigError("client ID metadata cache: need 0 <= min_cache_seconds <= cache_seconds <= max")
        if timeout <= 0 or max_bytes <= 0 or negative_cache_seconds < 0:
            raise ConfigError("client ID metadata fetch: timeout and max_bytes must be positive")
        self._policy = policy
        self._known_scopes = known_scopes
        # One context for the resolver's lifetime: building one costs ~25 ms (DESIGN.md §7).
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._default_ttl = cache_seconds
        self._min_ttl = min_cache_seconds
        self._max_ttl = max_cache_seconds
        self._negative_ttl = negative_cache_seconds
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}

    async def resolve(self, client_id: str) -> ClientRecord:
        """The client described by the document at ``client_id``; ``Refusal("invalid_client")`` otherwise."""
        entry = await self._entry(client_id)
        if entry.record is None:
            raise self._failure(entry).refusal()
        return entry.record

    async def fetch(self, url: str) -> Mapping[str, object]:
        """The validated document at ``url`` (``oauth.server.MetadataDocuments``); raises like ``resolve``."""
        entry = await self._entry(url)
        if entry.document is None:
            raise self._failure(entry).refusal()
        return entry.document

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- cache --------------------------------------------------------------------------------------------

    @staticmethod
    def _failure(entry: _Entry) -> _Failure:
        assert entry.failure is not None
        return entry.failure

    async def _entry(self, client_id: str) -> _Entry:
        url = check_client_id(client_id)  # no I/O, so never worth caching
        cached = self._cache.get(client_id)
        if cached is not None:
            if self._clock() < cached.expires_at:
                self._cache.move_to_end(client_id)
                return cached
            del self._cache[client_id]
        task = self._inflight.get(client_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(client_id, url))
            self._inflight[client_id] = task
            task.add_done_callback(lambda done: self._forget(client_id, done))
        # Shielded: a caller that gives up does not cancel the fetch the other callers are waiting for.
        return await asyncio.shield(task)

    def _forget(self, client_id: str, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(client_id) is task:
            del self._inflight[client_id]

    def _remember(self, client_id: str, entry: _Entry) -> None:
        self._cache[client_id] = entry
        self._cache.move_to_end(client_id)
        while len(self._cache) > MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _load(self, client_id: str, url: yarl.URL) -> _Entry:
        try:
            document, lifetime = await self._download(url)
            record = self._validate(client_id, document, lifetime)
        except _NoResponse as exc:
            failure = _Failure(exc.reason, f"client_id: {UNREACHABLE}", exc.cause)
            entry = _Entry(self._clock() + self._negative_ttl, failure=failure)
            self._remember(client_id, entry)
            return entry
        except Refusal as exc:
            # §4.4: error responses and invalid documents MUST NOT be cached.
            return _Entry(0.0, failure=_Failure(exc.reason, exc.description, exc.__cause__))
        assert record.expires_at is not None
        entry = _Entry(record.expires_at, record=record, document=MappingProxyType(document))
        self._remember(client_id, entry)
        return entry

    # -- fetch and validate -------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Built on first use, inside the running loop, then reused for every fetch.
            self._session = aiohttp.ClientSession(
                connector=netguard.connector(self._policy, ssl_context=self._ssl, lookup_timeout=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # HTTPS_PROXY from the environment would route around the guard
                auto_decompress=False,  # the size limit is on what we hold in memory: no decompression bombs
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def _download(self, url: yarl.URL) -> tuple[dict[str, JSONValue], float]:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._http().get(url, headers=_HEADERS, allow_redirects=False) as response:
                    body = await self._read(response)
                    lifetime = cache_lifetime(
                        ", ".join(response.headers.getall("Cache-Control", [])),
                        default=self._default_ttl,
                        minimum=self._min_ttl,
                        maximum=self._max_ttl,
                    )
        except netguard.SSRFBlocked as exc:
            raise _NoResponse(f"ssrf_{exc.reason}", exc) from exc
        except TimeoutError as exc:  # before ClientError: aiohttp's own timeouts are both
            raise _NoResponse("metadata_timeout", exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _NoResponse("metadata_unreachable", exc) from exc
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _refusal("metadata_not_json", "the metadata document is not JSON") from exc
        if not isinstance(document, dict):
            raise _refusal("metadata_not_object", "the metadata document is not a JSON object")
        return document, lifetime

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        if 300 <= response.status < 400:
            raise _refusal("metadata_redirect", "the metadata document URL redirects; redirects are not followed")
        if response.status != 200:
            raise _refusal("metadata_status", f"the metadata document answered HTTP {response.status}, not 200")
        if not _JSON_TYPE.fullmatch(response.content_type):
            raise _refusal("metadata_content_type", "the metadata document is not served as JSON")
        if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            raise _refusal("metadata_encoding", "the metadata document is compressed; it must not be")
        too_large = _refusal("metadata_too_large", f"the metadata document is larger than {self._max_bytes} bytes")
        if response.content_length is not None and response.content_length > self._max_bytes:
            raise too_large
        body = bytearray()
        while len(body) <= self._max_bytes:
            chunk = await response.content.read(self._max_bytes + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > self._max_bytes:
            raise too_large
        return bytes(body)

    def _validate(self, client_id: str, document: dict[str, JSONValue], lifetime: float) -> ClientRecord:
        record = registration.metadata_document_client(
            client_id, document, known_scopes=self._known_scopes, now=self._clock(), ttl=lifetime
        )
        if "client_secret_expires_at" in document:
            # §4.1 forbids it with client_secret; registration checks only the secret itself.
            raise _refusal("auth_method_unsupported", "a metadata document client cannot use a shared secret")
        if not record.redirect_uris:
            # Registration allows none for client_credentials-only clients; a CIMD client logs users in.
            raise Refusal("invalid_client", "redirect_uri_missing", "redirect_uris is required")
        return record
