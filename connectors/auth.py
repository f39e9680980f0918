"""User tokens and operator credentials of the gateway.

A user token lets a browser receive (and post events for) one user only:

    v1.<base64url(user_id)>.<expiry: unix seconds>.<base64url(signature)>
    signature = HMAC-SHA256(secret, "pulse.v1\\n" + user_id + "\\n" + expiry)

base64url without padding; the website's backend mints it with the shared secret (`pulse token USER`).

>>> token = mint_token("secret", "user-1", ttl_s=60, now=1_000)
>>> verify_token("secret", token, now=1_030)
'user-1'
>>> verify_token("other", token, now=1_030) is None, verify_token("secret", token, now=1_061) is None
(True, True)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

VERSION = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, user_id: str, expiry: int) -> bytes:
    message = f"pulse.{VERSION}\n{user_id}\n{expiry}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def mint_token(secret: str, user_id: str, ttl_s: int = 3600, now: float | None = None) -> str:
    """A token for `user_id` valid for `ttl_s` seconds."""
    if not secret:
        raise ValueError("a token needs a non-empty secret (PULSE_GATEWAY_SECRET)")
    expiry = int(time.time() if now is None else now) + ttl_s
    return f"{VERSION}.{_b64(user_id.encode())}.{expiry}.{_b64(_signature(secret, user_id, expiry))}"


class TokenError(ValueError):
    """Why a token does not grant access (malformed, bad signature, expired)."""


def read_token(secret: str, token: object, now: float | None = None) -> str:
    """The user id the token grants; raises TokenError if it is malformed, forged or expired."""
    if not isinstance(token, str) or len(token) > 1024:
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not parts[2].isdigit():
        raise TokenError("malformed token")
    try:
        user_id = _unb64(parts[1]).decode()
        signature = _unb64(parts[3])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise TokenError("malformed token") from None
    expiry = int(parts[2])
    if not hmac.compare_digest(signature, _signature(secret, user_id, expiry)):
        raise TokenError("bad token signature")
    if expiry < (time.time() if now is None else now):
        raise TokenError("token expired")
    return user_id


def verify_token(secret: str, token: object, now: float | None = None) -> str | None:
    """The user id the token grants, or None if it is malformed, forged or expired."""
    try:
        return read_token(secret, token, now)
    except TokenError:
        return None


def operator_allowed(expected: str, insecure: bool, authorization: str | None, query_token: str | None) -> bool:
    """Whether a request carries the operator credential (Bearer header or ?token=).

    Without a configured token the operator endpoints are open only in insecure mode.
    """
    if not expected:
        return insecure
    presented = query_token
    if authorization and authorization.startswith("Bearer "):
        presented = authorization[len("Bearer "):]
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())
