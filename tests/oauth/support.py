"""Helpers shared by the OAuth tests: a clock that moves only when told, and hand-built JWS tokens."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

import orjson
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry


class FakeClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: Mapping[str, object], claims: Mapping[str, object], sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS built by hand, so tests can produce tokens no library would sign."""
    signing_input = f"{b64(orjson.dumps(dict(header)))}.{b64(orjson.dumps(dict(claims)))}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def signer(alg: str, key: ECKey | OKPKey | RSAKey) -> Callable[[bytes], bytes]:
    """Sign with joserfc's algorithm model directly (its registry would warn on EdDSA)."""
    model = JWSRegistry.algorithms[alg]
    return lambda message: model.sign(message, key)


def public(key: ECKey | OKPKey | RSAKey) -> dict[str, object]:
    """The public JWK of ``key`` as a plain dict."""
    return dict(key.as_dict(private=False))
