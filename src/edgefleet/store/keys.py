"""Key rules shared by every backend: what a key is and where a prefix ends.

How: a key is a ``/``-rooted path without NUL characters; a prefix is either
empty (everything) or ``/``-rooted too. Keys compare as their UTF-8 bytes,
which for ``str`` is plain code-point order, so SQLite's BINARY collation,
etcd's byte order and Python's ``sorted`` all agree.

Why the ``/`` rule: the etcd backend stores a key under its root prefix as
``root + key``. Because every key starts with ``/``, the whole keyspace of a
deployment is exactly the range under ``root + "/"``: it never overlaps a
sibling root (``/edgefleet2``) nor the root key itself, where the backend
keeps its epoch. Both backends enforce the same rule so that they stay
interchangeable.
"""

from __future__ import annotations

from edgefleet.store.interface import InvalidKey

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def check_key(key: str) -> str:
    """``key`` itself when it is a valid key, else InvalidKey."""
    if not isinstance(key, str) or not key.startswith("/") or "\x00" in key:
        raise InvalidKey(f"invalid key {key!r}: keys are '/'-rooted paths without NUL")
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` itself when it is empty or a valid key, else InvalidKey."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or not prefix.startswith("/") or "\x00" in prefix:
        raise InvalidKey(f"invalid prefix {prefix!r}: use '' or a '/'-rooted path")
    return prefix


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    None when there is no such bound (empty prefix, or only U+10FFFF
    characters). Surrogates are skipped because they cannot be encoded.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code in _SURROGATES:
            code = _SURROGATES.stop
        if code <= _MAX_CODE_POINT:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
