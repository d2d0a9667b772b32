"""Outbound webhook calls (admission webhooks, rollout analysis checks): bounded in time and size.

How: one POST per call with httpx, and what a call to a URL that an API
user chose must not do: take longer than its deadline (one deadline over
connect, send and answer, so a webhook that drips its answer byte by byte
is cut off too), read more than a byte limit (the raw body, before any
decoding, so a compressed bomb cannot grow), follow redirects (a webhook
that redirects is misconfigured, or is pointing the cloud elsewhere), or
use a proxy from the cloud's environment. ``https`` is verified against the
system CAs or, when the webhook names one, only against its own CA bundle
(PEM; Kubernetes calls it ``caBundle``): webhooks behind a private CA work
without trusting that CA for anything else. Every failure is a
:class:`WebhookCallFailed` with a short reason a user can act on.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass

import httpx


class WebhookCallFailed(Exception):
    """A webhook call did not produce an answer; the message is the short reason."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A webhook's raw answer."""

    status: int
    content_encoding: str
    body: bytes


@functools.lru_cache(maxsize=32)
def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """The system CAs, or only ``ca_bundle``'s; built once per bundle (loading CAs costs milliseconds)."""
    if ca_bundle is None:
        return httpx.create_ssl_context()
    try:
        return ssl.create_default_context(cadata=ca_bundle)
    except (ssl.SSLError, ValueError) as exc:
        raise WebhookCallFailed(f"its caBundle cannot be loaded ({clean_text(str(exc), 120)})") from None


async def post(
    url: str, body: bytes, *, deadline: float, max_bytes: int, headers: dict[str, str], ca_bundle: str | None = None
) -> Reply:
    """POST ``body``; the answer within ``deadline`` seconds and ``max_bytes`` bytes, or WebhookCallFailed."""
    try:
        async with asyncio.timeout(deadline):
            return await _exchange(url, body, deadline, max_bytes, headers, tls_context(ca_bundle))
    except (TimeoutError, httpx.TimeoutException):
        raise WebhookCallFailed(f"no answer within {deadline:g}s") from None
    except (httpx.ConnectError, OSError) as exc:
        raise WebhookCallFailed(f"cannot be reached ({described(exc)})") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise WebhookCallFailed(f"broke the HTTP exchange ({described(exc)})") from None


async def _exchange(
    url: str, body: bytes, deadline: float, max_bytes: int, headers: dict[str, str], context: ssl.SSLContext
) -> Reply:
    async with (
        httpx.AsyncClient(verify=context, trust_env=False, follow_redirects=False, timeout=deadline) as client,
        client.stream("POST", url, content=body, headers=headers) as response,
    ):
        data = await _read(response, max_bytes)
        return Reply(response.status_code, response.headers.get("content-encoding", ""), data)


async def _read(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise WebhookCallFailed(f"answered {int(declared)} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise WebhookCallFailed(f"answered more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def clean_text(text: str, limit: int) -> str:
    """``text`` without control characters (a space instead), stripped, at most ``limit`` characters."""
    cleaned = "".join(char if char.isprintable() else " " for char in text[: limit * 2]).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {clean_text(str(exc), 200)}"
