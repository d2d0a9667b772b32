"""Signed URLs (token auth): HMAC-SHA256 over the path and the expiry, checked with skew and two keys.

URL format (like CloudFront's and Akamai's token auth, simplified): ``/path?expires=E&token=T`` where
``E`` is the expiry in POSIX seconds (decimal) and ``T`` is the lowercase hex of ``HMAC-SHA256(key,
"<path>:<E>")``, ``path`` being the request path as the cache reads it (as sent, percent-encoded,
without the query; in canonical form: no ``//`` or dot segments, unreserved characters not percent-
encoded, which every ordinary URL path already is) and ``key`` the UTF-8 bytes of the Secret's value. A
request passes when some key of the rule (two during a rotation) gives ``T`` (compared in constant time)
and ``now <= E + skew``; with ``maxLifetime``, also ``E <= now + maxLifetime + skew``. Sign in a shell
with::

    printf '%s' "/video/a.mp4:1767225600" | openssl dgst -sha256 -hmac "$KEY" -hex
"""

from __future__ import annotations

import hashlib
import hmac


def sign_path(key: str, path: str, expires: int) -> str:
    """The token for ``path`` valid until ``expires`` (POSIX seconds) under ``key``."""
    message = f"{path}:{expires}".encode("utf-8", "surrogatepass")
    return hmac.new(key.encode("utf-8", "surrogatepass"), message, hashlib.sha256).hexdigest()


def check_token(
    keys: list[str],
    path: str,
    expires_text: str | None,
    token: str | None,
    now: float,
    *,
    skew: float,
    max_lifetime: float | None,
) -> str | None:
    """None when the token is good, else why not (``missing token``, ``expired``, ``bad signature``...)."""
    if not keys:
        return "no key available (the Secret is missing on this node)"
    if expires_text is None or token is None:
        return "missing expires or token parameter"
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
        return "malformed expires"
    expires = int(expires_text)
    if now > expires + skew:
        return f"expired {now - expires:.0f}s ago"
    if max_lifetime is not None and expires > now + max_lifetime + skew:
        return "expires too far in the future"
    lowered = token.lower()
    good = False
    for key in keys:
        good |= hmac.compare_digest(sign_path(key, path, expires), lowered)
    return None if good else "bad signature"
