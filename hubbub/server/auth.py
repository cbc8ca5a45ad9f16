"""Connection tokens (PROTOCOL.md §8 "A connection token"): HS256 JWTs via PyJWT.

``sub`` is the user, ``exp`` is enforced, and the optional ``channels`` and
``publish`` glob lists restrict what the user may subscribe and publish to.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import jwt

from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError
from hubbub.server.config import AuthConfig


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on a connection and what the token lets them do."""

    user: str = ""
    expires: float | None = None  # unix seconds
    channels: tuple[str, ...] | None = None  # None: every channel the namespace allows
    publish: tuple[str, ...] | None = None
    anonymous: bool = True

    def may_subscribe(self, channel: str) -> bool:
        return self.channels is None or any(fnmatchcase(channel, p) for p in self.channels)

    def may_publish(self, channel: str) -> bool:
        return self.publish is None or any(fnmatchcase(channel, p) for p in self.publish)


ANONYMOUS = Identity()


def _patterns(claims: dict[str, object], key: str) -> tuple[str, ...] | None:
    value = claims.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise CommandError(ErrorCode.UNAUTHORIZED, f"token claim {key!r} must be a list of strings")
    return tuple(value)


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
                options={"require": ["sub", "exp"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise CommandError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now:
            raise CommandError(ErrorCode.UNAUTHORIZED, "token expired")
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
