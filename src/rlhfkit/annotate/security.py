"""Login tokens, CSRF tokens, and the checks that compare them.

- A login token is 256 random bits, printed once by `add-annotator`; the store keeps only its
  sha256, so a copy of the database does not let anyone log in.
- Every comparison of secrets goes through `hmac.compare_digest` (constant time).
- Pages authenticate with a cookie, so every state-changing request made with that cookie
  must also carry a CSRF token: an HMAC of the login token's hash under the store's secret.
  A cross-site page cannot read it, so it cannot submit a label on an annotator's behalf.
  Bearer-token API calls carry no ambient credential and need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

TOKEN_PREFIX = "rlk_"


class TokenRefused(Exception):
    """The token no longer belongs to its annotator (revoked or rotated): 401."""


def verify(stored_hash: str, token_hash: str | None) -> None:
    """In a unit's own transaction: the annotator's row, read there (locked on PostgreSQL),
    still holds the hash of the token the request came with. None: nothing to check (a
    command-line action, or a caller already checked in this transaction)."""
    if token_hash is not None and not same(stored_hash, token_hash):
        raise TokenRefused


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string equality."""
    return hmac.compare_digest(a.encode(), b.encode())


def csrf_token(secret: str, token_hash: str) -> str:
    return hmac.new(secret.encode(), b"csrf:" + token_hash.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, token_hash: str, given: str | None) -> bool:
    return given is not None and same(csrf_token(secret, token_hash), given)


def new_task_id() -> str:
    return secrets.token_hex(16)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
