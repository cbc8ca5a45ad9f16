"""server.auth: HS256 connection tokens (PROTOCOL.md §8), time passed in."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError
from hubbub.server.auth import ANONYMOUS, Authenticator, Identity
from hubbub.server.config import AuthConfig

SECRET = "test-secret-" + "k" * 60  # long enough for HS256 and HS512
NOW = 1_700_000_000.0


def token(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def auth(**config: Any) -> Authenticator:
    return Authenticator(AuthConfig(**{"hmac_secret": SECRET, **config}))


def refused(authenticator: Authenticator, tok: str | None, now: float = NOW) -> CommandError:
    with pytest.raises(CommandError) as info:
        authenticator.authenticate(tok, now)
    assert info.value.code == ErrorCode.UNAUTHORIZED
    return info.value


def test_valid_token() -> None:
    identity = auth().authenticate(token({"sub": "alice", "exp": int(NOW) + 60}), NOW)
    assert identity == Identity(user="alice", expires=NOW + 60, anonymous=False)
    assert identity.channels is None and identity.publish is None
    assert identity.may_subscribe("chat:anything") and identity.may_publish("x")


def test_expired_token() -> None:
    tok = token({"sub": "alice", "exp": int(NOW)})
    assert "expired" in refused(auth(), tok, NOW).message
    assert auth().authenticate(tok, NOW - 1).user == "alice"  # valid a second earlier


def test_wrong_key() -> None:
    refused(auth(), token({"sub": "alice", "exp": NOW + 60}, key=SECRET + "-other"))


def test_other_algorithms_are_refused() -> None:
    unsigned = jwt.encode({"sub": "alice", "exp": NOW + 60}, None, algorithm="none")
    refused(auth(), unsigned)
    refused(auth(), token({"sub": "alice", "exp": NOW + 60}, algorithm="HS512"))


@pytest.mark.parametrize(
    "claims",
    [{"exp": NOW + 60}, {"sub": "alice"}, {"sub": 7, "exp": NOW + 60}, {"sub": "a", "exp": "x"}],
    ids=["no-sub", "no-exp", "int-sub", "str-exp"],
)
def test_bad_claims(claims: dict[str, Any]) -> None:
    refused(auth(), token(claims))


@pytest.mark.parametrize("tok", ["", "garbage", "a.b.c"])
def test_malformed_token(tok: str) -> None:
    refused(auth(), tok)


def test_channel_and_publish_globs() -> None:
    tok = token({
        "sub": "bob",
        "exp": NOW + 60,
        "channels": ["chat:*", "news"],
        "publish": ["chat:room-?"],
    })
    identity = auth().authenticate(tok, NOW)
    assert identity.channels == ("chat:*", "news") and identity.publish == ("chat:room-?",)
    assert identity.may_subscribe("chat:lobby")
    assert identity.may_subscribe("news")
    assert not identity.may_subscribe("news:sport")
    assert not identity.may_subscribe("Chat:lobby")  # case matters
    assert identity.may_publish("chat:room-1")
    assert not identity.may_publish("chat:room-12")
    assert not identity.may_publish("news")


def test_empty_glob_lists_allow_nothing() -> None:
    identity = auth().authenticate(
        token({"sub": "c", "exp": NOW + 60, "channels": [], "publish": []}), NOW
    )
    assert not identity.may_subscribe("a") and not identity.may_publish("a")


@pytest.mark.parametrize("claim", ["channels", "publish"])
@pytest.mark.parametrize("value", ["chat:*", [1], {"a": 1}])
def test_bad_glob_claims(claim: str, value: Any) -> None:
    refused(auth(), token({"sub": "c", "exp": NOW + 60, claim: value}))


def test_anonymous_connect() -> None:
    assert auth().authenticate(None, NOW) is ANONYMOUS
    assert ANONYMOUS.anonymous and ANONYMOUS.user == ""
    assert "required" in refused(auth(anonymous=False), None).message


def test_tokens_without_a_secret_are_refused() -> None:
    authenticator = Authenticator(AuthConfig())
    refused(authenticator, token({"sub": "alice", "exp": NOW + 60}))
    assert authenticator.authenticate(None, NOW) is ANONYMOUS


def test_verify_is_what_refresh_uses() -> None:
    identity = auth().verify(token({"sub": "dora", "exp": NOW + 5}), NOW)
    assert identity.user == "dora" and identity.expires == NOW + 5
    with pytest.raises(CommandError):
        auth().verify(token({"sub": "dora", "exp": NOW + 5}), NOW + 5)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, 1.5, True, -1, 2**53])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_must_be_finite_integers_in_range(claim: str, value: Any) -> None:
    claims: dict[str, Any] = {"sub": "a", "exp": int(NOW) + 60, claim: value}
    payload = json.dumps(claims)
    tok = jwt.api_jws.encode(payload.encode(), SECRET, algorithm="HS256")
    refused(auth(), tok)


def test_not_before_in_the_future_is_refused() -> None:
    tok = token({"sub": "a", "exp": int(NOW) + 60, "nbf": int(NOW) + 30})
    assert "not valid yet" in refused(auth(), tok).message
