"""RFC 7636 PKCE, S256 only: the Appendix B vector, challenge rules at /authorize, verifier checks."""

from __future__ import annotations

import pytest

from mcp_bastion.oauth import pkce
from mcp_bastion.oauth.refusal import Refusal
from tests.oauth.asworld import CHALLENGE, VERIFIER


def test_appendix_b_vector() -> None:
    assert pkce.s256(VERIFIER) == CHALLENGE


def test_metadata_advertises_s256_only() -> None:
    assert pkce.METHODS_SUPPORTED == ("S256",)


@pytest.mark.parametrize(
    ("challenge", "method", "reason"),
    [
        pytest.param(None, "S256", "pkce_challenge_missing", id="missing-challenge"),
        pytest.param("", "S256", "pkce_challenge_missing", id="empty-challenge"),
        pytest.param(CHALLENGE, None, "pkce_method_unsupported", id="missing-method-means-plain"),
        pytest.param(CHALLENGE, "plain", "pkce_method_unsupported", id="plain"),
        pytest.param(CHALLENGE, "s256", "pkce_method_unsupported", id="lowercase-method"),
        pytest.param("a" * 42, "S256", "pkce_challenge_malformed", id="too-short"),
        pytest.param("a" * 129, "S256", "pkce_challenge_malformed", id="too-long"),
        pytest.param(CHALLENGE[:-1] + "=", "S256", "pkce_challenge_malformed", id="padding"),
        pytest.param(CHALLENGE[:-1] + "/", "S256", "pkce_challenge_malformed", id="not-unreserved"),
    ],
)
def test_challenge_refused(challenge: str | None, method: str | None, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        pkce.check_challenge(challenge, method)
    assert (caught.value.error, caught.value.reason) == ("invalid_request", reason)


@pytest.mark.parametrize(
    "challenge",
    [
        pytest.param(CHALLENGE, id="rfc-vector"),
        pytest.param("A" * 128, id="longest"),
        pytest.param("-._~" * 11, id="all-marks"),
    ],
)
def test_challenge_accepted(challenge: str) -> None:
    assert pkce.check_challenge(challenge, "S256") == challenge


def test_verifier_matches() -> None:
    pkce.verify(VERIFIER, CHALLENGE)


@pytest.mark.parametrize(
    ("verifier", "reason"),
    [
        pytest.param(None, "pkce_verifier_missing", id="missing"),
        pytest.param("", "pkce_verifier_missing", id="empty"),
        pytest.param(VERIFIER[:-1] + "l", "pkce_verifier_mismatch", id="wrong"),
        pytest.param(CHALLENGE, "pkce_verifier_mismatch", id="challenge-as-verifier"),
        pytest.param(VERIFIER[:42], "pkce_verifier_malformed", id="too-short"),
        pytest.param(VERIFIER + " ", "pkce_verifier_malformed", id="space"),
        pytest.param("é" * 43, "pkce_verifier_malformed", id="non-ascii"),
    ],
)
def test_verifier_refused(verifier: str | None, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        pkce.verify(verifier, CHALLENGE)
    assert (caught.value.error, caught.value.reason) == ("invalid_grant", reason)
