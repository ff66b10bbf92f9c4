"""The relying-party side of OpenID Connect: provider discovery, the token request, UserInfo and ID token
validation, for logging users in through an external identity provider (``oauth.federation`` drives it).

OpenID Connect Discovery 1.0 §4.1-4.3 (the configuration document; its ``issuer`` must equal the issuer we
asked for, exactly), OIDC Core 1.0 §3.1.3.1-3.1.3.5 (token request and response), §3.1.3.7 (ID token
validation), §5.3.2-5.3.4 (UserInfo, whose ``sub`` must equal the ID token's), RFC 6749 §2.3.1
(``client_secret_basic``: both halves form-encoded first), RFC 8725 §3.1-3.2 (algorithm allow-lists).

Invariants:
- every URL contacted is https, or plain http to a loopback IP literal when ``allow_insecure_http`` is set;
- no redirect is followed and every response is bounded in bytes and time (``AiohttpTransport``);
- the ID token's ``alg`` never chooses the kind of key: it must be on the allow-list (``none`` and HS* can
  never be) *and* fit the type of the key that the IdP's JWK Set holds for ``kid``; ``jku``/``jwk``/``x5u``/
  ``x5c`` headers are ignored; claims are read only after the signature over those bytes is verified;
- ``at_hash`` is not checked: in the code flow the token comes straight from the token endpoint, so OIDC Core
  §3.1.3.8 makes it optional, and the ID token is bound to this login by ``nonce`` instead;
- every failure raises ``Refusal`` with a ``reason`` from ``REASONS``; descriptions never carry a token,
  a code or a secret (only lengths, claim names and short quoted values).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, final
from urllib.parse import quote_plus, urlsplit

import aiohttp
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from mcp_bastion.errors import Unavailable
from mcp_bastion.oauth.access_token import ALG_MODELS, B64URL_ALPHABET, SAME_ALG, SUPPORTED_ALGORITHMS
from mcp_bastion.oauth.jwks import KeySource
from mcp_bastion.oauth.refusal import Refusal

REASONS: Final = frozenset(
    {
        "idp_unreachable",
        "discovery_invalid",
        "discovery_issuer_mismatch",
        "token_request_refused",
        "token_response_invalid",
        "userinfo_failed",
        "userinfo_subject_mismatch",
        "id_token_malformed",
        "id_token_alg_forbidden",
        "id_token_key_unknown",
        "id_token_signature_invalid",
        "id_token_issuer_mismatch",
        "id_token_audience_mismatch",
        "id_token_azp_mismatch",
        "id_token_expired",
        "id_token_not_yet_valid",
        "id_token_too_old",
        "id_token_missing_claim",
        "id_token_nonce_mismatch",
    }
)
"""Every ``Refusal.reason`` this module raises."""

ID_TOKEN_ALGORITHMS: Final = frozenset({"ES256", "RS256", "EdDSA"})
"""Default allow-list; any subset of ``access_token.SUPPORTED_ALGORITHMS`` (asymmetric only) may be set."""
MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Largest discovery, token or UserInfo response we read; real ones are a few KB."""
MAX_ID_TOKEN_LENGTH: Final = 16 * 1024
REQUEST_TIMEOUT_SECONDS: Final = 10.0
"""Whole-request budget (connect, TLS, headers, body) for one call to the IdP."""
MAX_ID_TOKEN_AGE_SECONDS: Final = 600
"""An ID token just returned by the token endpoint was issued moments ago; an old ``iat`` is a replay."""

_NOT_ID_TOKEN_TYPES: Final = frozenset({"application/at+jwt", "application/logout+jwt", "application/secevent+jwt"})


def _refuse(reason: str, description: str, *, error: str = "server_error", status: int = 502) -> Refusal:
    # Most failures here are the IdP misbehaving (or someone in between): RFC 6749 "server_error", 502.
    return Refusal(error, reason, description, status=status)


def _rejected(reason: str, description: str) -> Refusal:
    # The identity assertion itself is not acceptable (forged, replayed, or meant for someone else).
    return Refusal("access_denied", reason, description, status=403)


def _show(value: object) -> str:
    """An IdP- or attacker-supplied value, quoted and shortened for a description."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def url_problem(url: str, *, allow_insecure_http: bool) -> str | None:
    """Why ``url`` may not be contacted, or None: https with a host, or http to a loopback IP literal when
    ``allow_insecure_http`` (a host name could resolve anywhere; only a literal is known to stay local)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if not parts.hostname or parts.username is not None or parts.password is not None or parts.fragment:
        return "needs a host, and no credentials or fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_insecure_http:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return None
        except ValueError:
            pass
    return "must be https (plain http only to a loopback IP literal with allow_insecure_http)"


# --- HTTP seam ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    content_type: str
    """Media type only, lower case, without parameters."""
    body: bytes = field(repr=False)


class HTTPTransport(Protocol):
    """How this module talks to the IdP; tests pass an in-memory IdP. Failures to get any answer at all
    (connection, timeout, oversized body) raise ``Refusal`` with reason ``idp_unreachable``."""

    async def request(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        headers: Mapping[str, str],
        form: Mapping[str, str] | None = None,
    ) -> HTTPResponse: ...

    async def aclose(self) -> None: ...


@final
class AiohttpTransport:
    """One pooled aiohttp session for the life of the login service; no redirects, bounded bodies."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        """``ssl_context`` None means the system trust store (aiohttp's default context, built once)."""
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        headers: Mapping[str, str],
        form: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        if self._session is None:
            # Created on first use: an aiohttp session must be built inside the running event loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4),
                timeout=self._timeout,
                trust_env=False,  # no proxy from the environment between us and the IdP
            )
        try:
            # No redirects: one could leave https, or take the code and secret to another host.
            async with self._session.request(
                method, url, headers=dict(headers), data=dict(form) if form is not None else None, allow_redirects=False
            ) as response:
                if response.content_length is not None and response.content_length > self._max_bytes:
                    raise _refuse("idp_unreachable", f"{url}: response of {response.content_length} bytes", status=503)
                body = bytearray()
                async for chunk in response.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise _refuse("idp_unreachable", f"{url}: response over {self._max_bytes} bytes", status=503)
                return HTTPResponse(response.status, response.content_type.lower(), bytes(body))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _refuse(
                "idp_unreachable", f"{method} {url}: {type(exc).__name__}", error="temporarily_unavailable", status=503
            ) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json_object(response: HTTPResponse, reason: str, what: str) -> dict[str, object]:
    if response.content_type != "application/json":
        raise _refuse(reason, f"{what}: content type {_show(response.content_type)}, not application/json")
    try:
        value = orjson.loads(response.body)
    except orjson.JSONDecodeError as exc:
        raise _refuse(reason, f"{what}: not JSON") from exc
    if not isinstance(value, dict):
        raise _refuse(reason, f"{what}: not a JSON object")
    return value


# --- discovery ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of an OpenID Provider's configuration (Discovery §3) this client uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    iss_parameter_supported: bool
    """RFC 9207 §3: when true, every authorization response must carry ``iss``."""
    token_endpoint_auth_methods: frozenset[str]
    id_token_algorithms: frozenset[str]


def discovery_url(issuer: str) -> str:
    """Discovery §4.1: a terminating "/" of the issuer is removed before appending the well-known path."""
    return issuer.removesuffix("/") + "/.well-known/openid-configuration"


def _strings(document: Mapping[str, object], name: str, default: tuple[str, ...] | None = None) -> frozenset[str]:
    value = document.get(name)
    if value is None and default is not None:
        return frozenset(default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refuse("discovery_invalid", f"{name} is not an array of strings")
    return frozenset(value)


def _endpoint(document: Mapping[str, object], name: str, allow_insecure_http: bool) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise _refuse("discovery_invalid", f"{name} missing or not a string")
    problem = url_problem(value, allow_insecure_http=allow_insecure_http)
    if problem is not None:
        raise _refuse("discovery_invalid", f"{name} {_show(value)}: {problem}")
    return value


def parse_metadata(response: HTTPResponse, *, issuer: str, allow_insecure_http: bool) -> ProviderMetadata:
    """Validate a discovery response for ``issuer``; raise ``Refusal`` (discovery_*) when it is unusable."""
    if response.status != 200:
        raise _refuse("discovery_invalid", f"HTTP {response.status}")
    document = _json_object(response, "discovery_invalid", "configuration")
    # Discovery §4.3: exactly the issuer we asked for, or an IdP could impersonate another (mix-up).
    if document.get("issuer") != issuer:
        raise _refuse("discovery_issuer_mismatch", f"issuer {_show(document.get('issuer'))}, expected {issuer!r}")
    if "code" not in _strings(document, "response_types_supported"):
        raise _refuse("discovery_invalid", "response_types_supported lacks 'code'")
    # Absent means "not advertised", which many IdPs that do support PKCE leave out; a list without S256 is a no.
    methods = document.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in _strings(document, "code_challenge_methods_supported"):
        raise _refuse("discovery_invalid", "code_challenge_methods_supported lacks S256")
    iss_supported = document.get("authorization_response_iss_parameter_supported", False)
    if not isinstance(iss_supported, bool):
        raise _refuse("discovery_invalid", "authorization_response_iss_parameter_supported is not a boolean")
    has_userinfo = document.get("userinfo_endpoint") is not None
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=_endpoint(document, "authorization_endpoint", allow_insecure_http),
        token_endpoint=_endpoint(document, "token_endpoint", allow_insecure_http),
        jwks_uri=_endpoint(document, "jwks_uri", allow_insecure_http),
        userinfo_endpoint=_endpoint(document, "userinfo_endpoint", allow_insecure_http) if has_userinfo else None,
        iss_parameter_supported=iss_supported,
        # Discovery §3: the default when absent is client_secret_basic.
        token_endpoint_auth_methods=_strings(
            document, "token_endpoint_auth_methods_supported", ("client_secret_basic",)
        ),
        id_token_algorithms=_strings(document, "id_token_signing_alg_values_supported"),
    )


# --- token request and UserInfo -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenResponse:
    id_token: str = field(repr=False)
    access_token: str | None = field(repr=False)


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: ``Basic base64(urlencode(id) ":" urlencode(secret))``."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


async def exchange_code(
    http: HTTPTransport,
    token_endpoint: str,
    *,
    client_id: str,
    client_secret: str | None,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> TokenResponse:
    """OIDC Core §3.1.3.1: trade the code (with the PKCE verifier) for tokens; §3.1.3.3-3.1.3.4 checks."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    form["code_verifier"] = code_verifier
    headers = {"Accept": "application/json"}
    if client_secret is None:
        form["client_id"] = client_id  # a public client ("none") identifies itself in the body
    else:
        headers["Authorization"] = basic_credentials(client_id, client_secret)
    response = await http.request("POST", token_endpoint, headers=headers, form=form)
    if response.status != 200:
        # RFC 6749 §5.2: only the error code and description are quoted, never the rest of the body.
        try:
            body = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        raise _refuse("token_request_refused", f"HTTP {response.status}, error {_show(error)}")
    document = _json_object(response, "token_response_invalid", "token response")
    id_token, access_token = document.get("id_token"), document.get("access_token")
    if not isinstance(id_token, str) or not id_token:
        raise _refuse("token_response_invalid", "no id_token (was the 'openid' scope granted?)")
    if access_token is not None and not isinstance(access_token, str):
        raise _refuse("token_response_invalid", "access_token is not a string")
    token_type = document.get("token_type")
    if access_token and (not isinstance(token_type, str) or token_type.lower() != "bearer"):
        # We would send it as a bearer token to UserInfo; anything else (DPoP...) we did not ask for.
        raise _refuse("token_response_invalid", f"token_type {_show(token_type)}, expected Bearer")
    return TokenResponse(id_token=id_token, access_token=access_token or None)


async def fetch_userinfo(
    http: HTTPTransport, userinfo_endpoint: str, access_token: str, subject: str
) -> dict[str, object]:
    """OIDC Core §5.3: the claims about the user; §5.3.4: refused unless its ``sub`` is the ID token's."""
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    response = await http.request("GET", userinfo_endpoint, headers=headers)
    if response.status != 200:
        raise _refuse("userinfo_failed", f"HTTP {response.status}")
    # A signed or encrypted UserInfo (application/jwt) was not requested; refusing it is simpler than guessing.
    claims = _json_object(response, "userinfo_failed", "UserInfo response")
    if claims.get("sub") != subject:
        raise _rejected("userinfo_subject_mismatch", f"UserInfo sub {_show(claims.get('sub'))} is not the ID token's")
    return claims


# --- ID token validation ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IDTokenCheck:
    """What the ID token of one login must say (OIDC Core §3.1.3.7)."""

    issuer: str
    client_id: str
    nonce: str = field(repr=False)
    algorithms: frozenset[str] = ID_TOKEN_ALGORITHMS
    leeway_seconds: float = 60.0
    max_age_seconds: float = MAX_ID_TOKEN_AGE_SECONDS


def _b64decode(segment: str) -> bytes:
    if not segment or not B64URL_ALPHABET.issuperset(segment):
        raise _rejected("id_token_malformed", "segment is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _rejected("id_token_malformed", "segment is not base64url") from exc


def _decode_object(segment: str, part: str) -> dict[str, object]:
    try:
        value = orjson.loads(_b64decode(segment))
    except orjson.JSONDecodeError as exc:
        raise _rejected("id_token_malformed", f"{part} is not JSON") from exc
    if not isinstance(value, dict):
        raise _rejected("id_token_malformed", f"{part} is not a JSON object")
    return value


def _number(claims: Mapping[str, object], name: str) -> float:
    value = claims.get(name)
    if value is None:
        raise _rejected("id_token_missing_claim", f"no {name!r} claim")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _rejected("id_token_malformed", f"claim {name!r} is not a number")
    try:
        number = float(value)
    except OverflowError as exc:
        raise _rejected("id_token_malformed", f"claim {name!r} is out of range") from exc
    if not math.isfinite(number):
        raise _rejected("id_token_malformed", f"claim {name!r} is not finite")
    return number


async def _verified_payload(token: str, check: IDTokenCheck, keys: KeySource) -> dict[str, object]:
    """OIDC Core §3.1.3.7 steps 6-8: the signature, with an allowed alg and the IdP's key for ``kid``."""
    if len(token) > MAX_ID_TOKEN_LENGTH or not token.isascii():
        raise _rejected("id_token_malformed", f"ID token of {len(token)} characters or not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        # Five parts would be an encrypted (JWE) ID token, which we never register for.
        raise _rejected("id_token_malformed", f"{len(parts)} segments, a compact JWS has 3")
    header = _decode_object(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _rejected("id_token_malformed", "header has no string 'alg'")
    if alg not in check.algorithms:
        raise _rejected("id_token_alg_forbidden", f"alg {_show(alg)} is not allowed")
    if "crit" in header or "b64" in header:
        raise _rejected("id_token_malformed", "header uses 'crit' or 'b64'")  # RFC 7515 §4.1.11
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _rejected("id_token_malformed", "'kid' is not a string")
    try:
        key = await keys.key_for(kid)
    except Unavailable as exc:
        raise _refuse(
            "idp_unreachable", f"IdP keys unavailable: {exc.detail}", error="temporarily_unavailable", status=503
        ) from exc
    if key is None:
        raise _rejected("id_token_key_unknown", f"no key {_show(kid)} in the IdP's JWK Set")
    key_type, curve = SUPPORTED_ALGORITHMS[alg]
    if not isinstance(key, key_type) or (
        curve is not None and isinstance(key, ECKey | OKPKey) and key.curve_name != curve
    ):
        raise _rejected("id_token_alg_forbidden", f"alg {alg} does not fit key {_show(kid)}")
    declared = key.alg
    if declared is not None and SAME_ALG.get(declared, declared) != SAME_ALG.get(alg, alg):
        raise _rejected("id_token_alg_forbidden", f"key {_show(kid)} is for {declared}, the token uses {alg}")
    signature = _b64decode(parts[2])
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    try:
        valid = ALG_MODELS[alg].verify(signing_input, signature, key)
    except (JoseError, ValueError, TypeError):
        valid = False
    if not valid:
        raise _rejected("id_token_signature_invalid", f"bad {alg} signature, key {_show(kid)}")
    typ = header.get("typ")
    if isinstance(typ, str):
        media = typ.strip().lower()
        # An access token or a logout token of the same IdP is signed by the same key: not an ID token.
        if (media if "/" in media else "application/" + media) in _NOT_ID_TOKEN_TYPES:
            raise _rejected("id_token_malformed", f"typ {_show(typ)} is not an ID token")
    return _decode_object(parts[1], "payload")


async def verify_id_token(token: str, check: IDTokenCheck, keys: KeySource, *, now: float) -> dict[str, object]:
    """Validate an ID token per OIDC Core §3.1.3.7 and return its claims; raise ``Refusal`` (id_token_*)."""
    claims = await _verified_payload(token, check, keys)
    # From here on the claims are authentic; what remains is whether they are meant for this login.
    if claims.get("iss") != check.issuer:  # step 2: exact match
        raise _rejected("id_token_issuer_mismatch", f"iss {_show(claims.get('iss'))}, expected {check.issuer!r}")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _rejected("id_token_missing_claim", "no string 'sub' claim")
    audience = claims.get("aud")
    if isinstance(audience, str):
        audience = [audience]
    if not isinstance(audience, list) or not all(isinstance(item, str) for item in audience):
        raise _rejected("id_token_malformed", "claim 'aud' is neither a string nor an array of strings")
    if check.client_id not in audience:  # step 3
        raise _rejected("id_token_audience_mismatch", f"aud {_show(audience)} lacks our client_id")
    azp = claims.get("azp")
    # Steps 4-5: with several audiences the token must say it was issued to us, and any azp must be us.
    if (len(audience) > 1 and azp is None) or (azp is not None and azp != check.client_id):
        raise _rejected("id_token_azp_mismatch", f"azp {_show(azp)} with aud {_show(audience)}")
    expires_at, issued_at = _number(claims, "exp"), _number(claims, "iat")
    leeway = check.leeway_seconds
    if now >= expires_at + leeway:  # step 9
        raise _rejected("id_token_expired", f"expired at {expires_at}, now {now}")
    if issued_at > now + leeway or ("nbf" in claims and _number(claims, "nbf") > now + leeway):
        raise _rejected("id_token_not_yet_valid", f"iat {issued_at} or nbf in the future, now {now}")
    if now - issued_at > check.max_age_seconds + leeway:  # step 10: issued too far from now
        raise _rejected("id_token_too_old", f"iat {issued_at}, now {now}")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str):
        raise _rejected("id_token_missing_claim", "no string 'nonce' claim")
    # Step 11: the nonce ties the token to this browser's login; constant time like every secret comparison.
    if not hmac.compare_digest(nonce.encode(), check.nonce.encode()):
        raise _rejected("id_token_nonce_mismatch", "nonce does not match this login")
    return claims
