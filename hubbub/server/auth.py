"""Connection tokens (PROTOCOL.md §8 "A connection token"): HS256 JWTs via PyJWT.

``sub`` is the user, ``exp`` is enforced, and the optional ``channels`` and
``publish`` glob lists restrict what the user may subscribe and publish to
(:mod:`server.globs`: ``*`` stops at ``:``, ``**`` matches anything). Time
claims (``exp``, ``nbf``, ``iat``) must be integers in range, finite: a claim of
``1e400`` or ``NaN`` is a bad token (401), never an error of ours or a token
that never expires. Refusals name the check that failed in our own words and
echo nothing of the token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jwt

from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError
from hubbub.server.config import AuthConfig
from hubbub.server.globs import CHANNEL_SEPARATORS, Globs

#: Time claims past this (about year 285 million) are refused: every valid one
#: is below it, and it is exact as a float.
MAX_TIME_CLAIM = 2**53
#: What a refusal says for each PyJWT error (never the library's text, which
#: may quote the token's header or payload).
_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "invalid token: bad signature"),
    (jwt.InvalidAlgorithmError, "invalid token: algorithm not allowed"),
    (jwt.DecodeError, "invalid token: malformed"),
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on a connection and what the token lets them do."""

    user: str = ""
    expires: float | None = None  # unix seconds
    channels: tuple[str, ...] | None = None  # None: every channel the namespace allows
    publish: tuple[str, ...] | None = None
    anonymous: bool = True
    _channels: Globs | None = field(default=None, init=False, compare=False, repr=False)
    _publish: Globs | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.channels is not None:
            object.__setattr__(self, "_channels", Globs(self.channels, CHANNEL_SEPARATORS))
        if self.publish is not None:
            object.__setattr__(self, "_publish", Globs(self.publish, CHANNEL_SEPARATORS))

    def may_subscribe(self, channel: str) -> bool:
        return self._channels is None or self._channels.match(channel)

    def may_publish(self, channel: str) -> bool:
        return self._publish is None or self._publish.match(channel)


ANONYMOUS = Identity()


def _patterns(claims: dict[str, object], key: str) -> tuple[str, ...] | None:
    value = claims.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise CommandError(ErrorCode.UNAUTHORIZED, f"token claim {key!r} must be a list of strings")
    return tuple(value)


def _time_claim(claims: dict[str, object], key: str) -> int | None:
    """A NumericDate claim as an int; 401 unless it is a finite integer in range."""
    value = claims.get(key)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 <= value < MAX_TIME_CLAIM:
        raise CommandError(ErrorCode.UNAUTHORIZED, f"invalid token: {key} must be an integer time")
    return value


class Authenticator:
    """Checks tokens against ``[auth]``; stateless, so SIGHUP can swap it."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config

    def authenticate(self, token: str | None, now: float) -> Identity:
        """The identity of a ``connect``; raises 401 when it may not connect."""
        if token is None:
            if not self.config.anonymous:
                raise CommandError(ErrorCode.UNAUTHORIZED, "a token is required")
            return ANONYMOUS
        return self.verify(token, now)

    def verify(self, token: str, now: float) -> Identity:
        """Verify an HS256 token at ``now`` (unix seconds); raises 401."""
        if not self.config.hmac_secret:
            raise CommandError(ErrorCode.UNAUTHORIZED, "tokens are not enabled on this server")
        try:
            claims = jwt.decode(
                token,
                self.config.hmac_secret,
                algorithms=["HS256"],
                options={
                    "require": ["sub", "exp"],
                    "verify_exp": False,  # checked below, as finite integers
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            claim = exc.claim if exc.claim in ("sub", "exp") else "a claim"
            raise CommandError(ErrorCode.UNAUTHORIZED, f"invalid token: no {claim}") from None
        except jwt.PyJWTError as exc:
            message = next((m for t, m in _JWT_ERRORS if isinstance(exc, t)), "invalid token")
            raise CommandError(ErrorCode.UNAUTHORIZED, message) from None
        exp = _time_claim(claims, "exp")
        if exp is None or exp <= now:
            raise CommandError(ErrorCode.UNAUTHORIZED, "token expired")
        _time_claim(claims, "iat")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and nbf > now:
            raise CommandError(ErrorCode.UNAUTHORIZED, "token not valid yet")
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise CommandError(ErrorCode.UNAUTHORIZED, "token sub must be a string")
        return Identity(
            user=sub,
            expires=float(exp),
            channels=_patterns(claims, "channels"),
            publish=_patterns(claims, "publish"),
            anonymous=False,
        )
