"""``upstreams.<name>.auth`` with ``mode = "token_exchange"``: RFC 8693 at the upstream's authorization server.

For each user, the gateway (a confidential client there) trades the user's access token for a token whose
audience is the upstream and whose scopes are the narrowest configured; the upstream gets that token, never
the user's own. Exchanged tokens are cached per subject token (by digest) until shortly before they expire,
so a user's refreshed or revoked token is never served from someone else's exchange, and one exchange
serves a burst of calls.

Invariants:
- the subject token goes only to the configured token endpoint (https, or http on loopback when allowed);
- an authorization server that refuses (4xx) is a refusal for this user (``CredentialMissing``, with the
  RFC 6749 error code in the audit detail); one that cannot be reached or fails (5xx) is ``Unavailable``;
- tokens and the client secret never appear in logs, errors or ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final, final
from urllib.parse import quote_plus

import aiohttp

from mcp_bastion.delegation.remote import check_url, json_answer, session
from mcp_bastion.delegation.static import Header
from mcp_bastion.errors import CredentialMissing, Unavailable
from mcp_bastion.exchange import Principal

GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type name
EARLY_SECONDS: Final = 30.0
"""An exchanged token is renewed this long before it expires (clock skew, the call's own duration)."""
CACHE_SIZE: Final = 10_000
MAX_ANSWER_BYTES: Final = 64 * 1024


@final
class TokenExchange:
    """``delegation.static.UpstreamAuth`` by RFC 8693 token exchange."""

    def __init__(
        self,
        *,
        token_endpoint: str,
        client_id: str,
        client_secret: str,
        audience: str,
        scopes: tuple[str, ...] = (),
        ca_bundle: Path | None = None,
        allow_insecure_http: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = check_url(token_endpoint, allow_insecure_http, "token_endpoint")
        # RFC 6749 §2.3.1: both parts form-urlencoded before the base64 of client_secret_basic.
        pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        self._authorization = {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        self._audience = audience
        self._scopes = " ".join(scopes)
        self._ssl = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle is not None else None
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never the secret
        return f"TokenExchange({self._endpoint!r}, audience={self._audience!r})"

    async def headers(self, principal: Principal) -> list[Header]:
        subject = principal.token
        if subject is None:
            raise CredentialMissing(
                "token exchange needs the caller's bearer token", reason="upstream_no_subject_token"
            )
        key = hashlib.sha256(subject.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] - EARLY_SECONDS > now:
            self._cache.move_to_end(key)
            return [(b"authorization", b"Bearer " + cached[1])]
        token, expires_in = await self._exchange(subject)
        self._cache[key] = (now + expires_in, token)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return [(b"authorization", b"Bearer " + token)]

    async def _exchange(self, subject: str) -> tuple[bytes, float]:
        form = {
            "grant_type": GRANT,
            "subject_token": subject,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "resource": self._audience,
        }
        if self._scopes:
            form["scope"] = self._scopes
        session = self._client()
        failure: str | None = None
        try:
            post = session.post(self._endpoint, data=form, headers=self._authorization, allow_redirects=False)
            async with post as response:
                body = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        if failure is not None:  # raised outside the except: nothing chains to the request (it holds tokens)
            raise Unavailable(f"token exchange at {self._endpoint}: {failure}")
        answer = json_answer(body, MAX_ANSWER_BYTES)
        if 400 <= status < 500:
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error if isinstance(error, str) else f"HTTP {status}"
            raise CredentialMissing(f"token exchange refused: {code[:64]}", reason="upstream_token_exchange_refused")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(token, str) or not token.isascii() or not token.isprintable():
            raise Unavailable(f"token exchange at {self._endpoint}: HTTP {status}, no usable access_token")
        lifetime = (
            float(expires_in) if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) else 60.0
        )
        return token.encode("ascii"), max(0.0, lifetime)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = session(self._ssl)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
