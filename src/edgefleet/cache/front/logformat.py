"""Access log lines from compact records, a batch at a time: JSON lines, ``cdn`` text and ``combined``.

How: the request path keeps one tuple of strings and numbers per request
(:data:`Record`; the parser already picked out User-Agent and Referer) and
:mod:`edgefleet.cache.front.accesslog` hands a batch of them to
:meth:`Formatter.lines` when it flushes. Nothing is formatted or looked up
on the hot path: times, escaping and the Domain name are done here, later.

Formats (``accessLog.format``):

- ``json``: one JSON object a line (``application/x-ndjson``) with the
  ``fields`` chosen, in their order; absent values are ``null``.
- ``cdn``: the same fields separated by one space; absent values are ``-``;
  ``userAgent`` and ``referer`` are in double quotes (they hold spaces),
  every other value never holds a space.
- ``combined``: the Apache/nginx combined format, fixed fields:
  ``client - - [time] "method target protocol" status bytes "referer" "userAgent"``.

Fields: ``time`` (when the answer was done: UTC, ISO 8601 with milliseconds;
``[day/Mon/year:H:M:S +0000]`` in ``combined``), ``client`` (the peer address), ``method``,
``host`` (canonical, as cached), ``target`` (path and query as received),
``protocol`` (``HTTP/1.1``), ``status``, ``bytes`` (body bytes sent),
``cache`` (the cache status the reply path reports, e.g. ``HIT``, ``MISS``),
``upstreamMs`` (time to the upstream response head; absent when no upstream
was asked), ``ms`` (total time in the cache, 0 for a hit answered inside the
read), ``tls`` (the connection's TLS version; absent for cleartext),
``userAgent``, ``referer``, ``node``, ``domain`` (the Domain serving the host).

Why escaping is strict: host, target, User-Agent and Referer come from the
client (the method is one the parser knows, the address the socket's). A
line holds only printable ASCII: JSON strings escape control characters,
quotes, backslashes and every non-ASCII character (a target's non-UTF-8
bytes are latin-1 code points, so byte 0xff shows as ``\\u00ff``); text
formats write them (and spaces outside quotes) as ``\\xHH``. No value can
end a line early or forge a field or a line.

How it stays cheap (every field of a JSON line: about 13k instructions, 1.2 µs on
the 2-core VM, 15% less than one call per line; escaping each value costs
three times that): a batch is checked once, in C, per group of client values
(one join of the columns' values and one ``bytes.translate`` that deletes the
allowed bytes: no control character, quote, backslash or non-ASCII character,
nor, in text formats, a space outside quotes). A clean batch is written by one
generated list comprehension of one f-string with the values as they are
(times and Domain names are dict lookups that make the text on a miss, numbers
are formatted inline: no function call per line) and one join. A batch with a
value to escape goes line by line, and a line with such a value is written
with every value escaped. The generated code comes from the fixed expressions
of :data:`FIELDS` for each format and field selection, never from config text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, Literal, get_args

from edgefleet.cache.config import AccessLogField as FieldName

Format = Literal["json", "cdn", "combined"]


Record = tuple[int, str, str, str, str, str | None, str | None, str, str | None, int, int, str, float, float | None]
"""One request, as the request path keeps it: (wall time in ns since the epoch, method, host, target,
HTTP version, User-Agent, Referer, client address, TLS version, status, body bytes sent, cache status,
seconds, upstream ms).

Strings only (no request or connection object): a batch of them costs the garbage collector nothing."""


@dataclass(frozen=True)
class Field:
    """How one field is written: f-string expressions over the locals of the generated line function.

    Locals: the :data:`Record` as ts, me, ho, ta, ve, ua, ref, ip, tls, st, sent, cache, secs, up.
    ``*_raw`` write a client's value as it is, when ``check`` (an expression of the client's text in
    this field) holds no quote or backslash, nor in text formats a space unless ``quoted``;
    ``*_escaped`` escape it.
    """

    json_raw: str
    json_escaped: str
    text_raw: str
    text_escaped: str
    check: str = ""
    quoted: bool = False


def _same(json: str, text: str) -> Field:
    """A field of trusted values (ours, the socket's, or escaped by their helper): one way to write it."""
    return Field(json, json, text, text)


def _header(local: str) -> Field:
    """A request header field's value: may be absent (JSON null, text "-"), in quotes in text formats."""
    json_raw = f"""{{"null" if {local} is None else '"' + {local} + '"'}}"""
    text_raw = f'"{{{local} or "-"}}"'
    return Field(json_raw, f"{{_js_opt({local})}}", text_raw, f'"{{_tq({local})}}"', local, True)


FIELDS: dict[str, Field] = {
    "time": _same('"{_when[ts // 1000000]}"', "{_when[ts // 1000000]}"),
    "client": _same('"{ip}"', '{ip or "-"}'),  # the socket's address text
    "method": _same('"{me}"', "{me}"),  # one of the parser's known methods
    "host": _same('"{ho}"', '{ho or "-"}'),  # canonical: DNS labels or an IP literal (wire.targets)
    "target": Field('"{ta}"', "{_js(ta)}", '{ta or "-"}', "{_tx(ta)}", "ta"),
    "protocol": _same('"HTTP/{ve}"', "HTTP/{ve}"),
    "status": _same("{st}", "{st}"),
    "bytes": _same("{sent}", "{sent}"),
    "cache": Field('"{cache}"', "{_js(cache)}", '{cache or "-"}', "{_tx(cache)}", "cache"),
    "upstreamMs": _same('{"null" if up is None else f"{up:.3f}"}', '{"-" if up is None else f"{up:.3f}"}'),
    "ms": _same(
        '{"0.000" if not secs else f"{secs * 1000.0:.3f}"}', '{"0.000" if not secs else f"{secs * 1000.0:.3f}"}'
    ),
    "tls": _same('{"null" if tls is None else _js(tls)}', "{_tx(tls)}"),
    "userAgent": _header("ua"),
    "referer": _header("ref"),
    "node": _same("{NODE_JSON}", "{NODE_TEXT}"),
    "domain": _same("{_dom[ho]}", "{_dom[ho]}"),
}
DEFAULT_FIELDS: tuple[FieldName, ...] = get_args(FieldName)
COMBINED = (
    _same("", '{_tx(ip)} - - [{_clf[ts // 1000000000]}] "'),
    FIELDS["method"],
    _same("", " "),
    FIELDS["target"],
    _same("", ' HTTP/{ve}" {st} {sent} '),
    FIELDS["referer"],
    _same("", " "),
    FIELDS["userAgent"],
)
"""The combined format's pieces: in quotes, the request line's method and target may hold spaces."""

# --- escaping -------------------------------------------------------------------------------------

_TEXT_TABLE = {code: f"\\x{code:02x}" for code in [*range(0x21), 0x22, 0x5C, *range(0x7F, 0x100)]}
_QUOTED_TABLE = {code: escaped for code, escaped in _TEXT_TABLE.items() if code != 0x20}


def _text(value: str, table: dict[int, str]) -> str:
    escaped = value.translate(table)
    return escaped if escaped.isascii() else escaped.encode("ascii", "backslashreplace").decode("ascii")


def escape_text(value: str | None) -> str:
    """A value for an unquoted text field: ``-`` when absent or empty; no space, quote, control or non-ASCII."""
    if not value:
        return "-"
    if value.isascii() and value.isprintable() and " " not in value and '"' not in value and "\\" not in value:
        return value
    return _text(value, _TEXT_TABLE)


def escape_quoted(value: str | None) -> str:
    """A value inside double quotes in a text format: ``-`` when absent; spaces kept, the rest as ``\\xHH``."""
    if not value:
        return "-"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return _text(value, _QUOTED_TABLE)


def json_or_null(value: str | None) -> str:
    """A JSON string (ASCII only), or ``null``."""
    return "null" if value is None else encode_basestring_ascii(value)


# --- times, cached per second ------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ISO: dict[int, str] = {}
_CLF: dict[int, str] = {}
CACHED_TIMES = 4096
"""Texts a :class:`Times` keeps before it starts again (a 200 ms batch at 40k requests/s uses about 200)."""


def iso_millis(millis: int) -> str:
    """``2026-12-07T11:50:41.123Z`` (UTC) of ``millis`` since the epoch; the second's text is cached."""
    second, rest = divmod(millis, 1000)
    prefix = _ISO.get(second)
    if prefix is None:
        if len(_ISO) > 64:
            _ISO.clear()
        prefix = _ISO[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{rest:03d}Z"


def clf_time(second: int) -> str:
    """``07/Dec/2026:11:50:41 +0000``: the common log format's time, UTC (no locale: month names fixed)."""
    text = _CLF.get(second)
    if text is None:
        if len(_CLF) > 64:
            _CLF.clear()
        parts = time.gmtime(second)
        month = _MONTHS[parts.tm_mon - 1]
        text = _CLF[second] = f"{parts.tm_mday:02d}/{month}/{parts.tm_year}:{time.strftime('%H:%M:%S', parts)} +0000"
    return text


class Times(dict[int, str]):
    """A time's text by its number (``_when[millis]``, ``_clf[second]``): one dict lookup a line, text made once.

    A subscript of a dict is one bytecode; a function call per line cost about 60 ns more.
    """

    def __init__(self, make: Callable[[int], str]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: int) -> str:
        if len(self) >= CACHED_TIMES:
            self.clear()
        text = self[key] = self._make(key)
        return text


class Domains(dict[str, str]):
    """A host's Domain name as written in this format (``_dom[host]``), looked up once per host and batch."""

    def __init__(self, domain_of: Callable[[str], str | None], escape: Callable[[str | None], str]) -> None:
        super().__init__()
        self._domain_of = domain_of
        self._escape = escape

    def __missing__(self, host: str) -> str:
        text = self[host] = self._escape(self._domain_of(host))  # config text: escaped
        return text


# --- the formatter --------------------------------------------------------------------------------

_PRINTABLE = bytes(range(0x20, 0x7F))
UNPACK = "ts, me, ho, ta, ve, ua, ref, ip, tls, st, sent, cache, secs, up"
"""The :data:`Record`'s fields as the generated code names them."""
COLUMNS = {name: index for index, name in enumerate(UNPACK.split(", "))}


class Check:
    """One batch check: the record columns of client text and the characters they must not hold."""

    def __init__(self, columns: Sequence[int], forbidden: str) -> None:
        self.getters = [itemgetter(column) for column in columns]
        self.allowed = bytes(code for code in _PRINTABLE if chr(code) not in forbidden)

    def passes(self, records: Sequence[Record]) -> bool:
        """Whether no value in these columns holds a forbidden, control or non-ASCII character.

        In C: one join of the columns' values, and one ``bytes.translate`` that deletes every allowed byte.
        """
        text = "".join(filter(None, chain.from_iterable(map(getter, records) for getter in self.getters)))
        return text.isascii() and not text.encode("ascii").translate(None, self.allowed)


class Formatter:
    """Formats batches of records in one format and field selection (see the module docstring)."""

    def __init__(
        self,
        format: Format,
        fields: Sequence[FieldName] | None,
        node: str,
        domain_of: Callable[[str], str | None],
    ) -> None:
        self.format = format
        self.fields: tuple[str, ...] = tuple(fields or DEFAULT_FIELDS)
        escape = json_or_null if format == "json" else escape_text
        self._domains = Domains(domain_of, escape)
        chosen, separator = self._chosen()
        self._checks = _batch_checks(chosen, format != "json", "host" in self.fields and format != "combined")
        self.line, self.escaped, self._batch = self._compile(chosen, separator, node)

    def lines(self, records: Sequence[Record]) -> bytes:
        """The lines of ``records``, each ending in ``\\n``: ASCII bytes, one ``write`` for the whole batch.

        When the client's values of the batch hold nothing to escape (one check per column and batch), all
        lines come from one generated list comprehension; otherwise line by line, escaping where needed.
        """
        self._domains.clear()  # a reload may have moved a host to another Domain: look again per batch
        if all(check.passes(records) for check in self._checks):
            try:
                return "".join(self._batch(records)).encode("ascii")
            except UnicodeEncodeError:  # not from a client's value: the checks saw those
                pass
        return self._checked(records)

    def _checked(self, records: Sequence[Record]) -> bytes:
        """The slow way, line by line: a line that is not all printable ASCII is written escaped."""
        lines = []
        for record in records:
            line = self.line(record)
            body = line[:-1]
            lines.append(line if body.isascii() and body.isprintable() else self.escaped(record))
        return "".join(lines).encode("ascii")

    def _chosen(self) -> tuple[list[Field], str]:
        if self.format == "combined":
            return list(COMBINED), ""
        separator = " " if self.format == "cdn" else ","
        if self.format == "cdn":
            return [FIELDS[name] for name in self.fields], separator
        return [_keyed(name, FIELDS[name]) for name in self.fields], separator

    def _compile(self, chosen: list[Field], separator: str, node: str) -> tuple[Line, Line, Batch]:
        text = self.format != "json"
        raw = separator.join(field.text_raw if text else field.json_raw for field in chosen)
        escaped = separator.join(field.text_escaped if text else field.json_escaped for field in chosen)
        if not text:
            raw, escaped = "{{" + raw + "}}", "{{" + escaped + "}}"
        source = [
            "def escaped(record):",
            f"    {UNPACK} = record",
            f"    return f'''{escaped}\\n'''",
            "def line(record):",
            f"    {UNPACK} = record",
            *_checks(chosen, text),
            f"    return f'''{raw}\\n'''",
            "def batch(records):",
            f"    return [f'''{raw}\\n''' for {UNPACK} in records]",
        ]
        namespace = self._namespace(node)
        exec(compile("\n".join(source), "<access log format>", "exec"), namespace)  # fixed templates only
        return namespace["line"], namespace["escaped"], namespace["batch"]

    def _namespace(self, node: str) -> dict[str, Any]:
        return {
            "_when": Times(iso_millis),
            "_clf": Times(clf_time),
            "_js": encode_basestring_ascii,
            "_js_opt": json_or_null,
            "_tx": escape_text,
            "_tq": escape_quoted,
            "_dom": self._domains,
            "NODE_JSON": encode_basestring_ascii(node),
            "NODE_TEXT": escape_text(node),
        }


Line = Callable[[Record], str]
Batch = Callable[[Sequence[Record]], list[str]]


def _batch_checks(chosen: list[Field], text: bool, host: bool) -> list[Check]:
    """What :meth:`Formatter.lines` checks per batch: quotes and backslashes anywhere, spaces outside quotes in text.

    The host is canonical (the parser's), checked as a second net for control characters.
    """
    unquoted = [COLUMNS[field.check] for field in chosen if field.check and not (text and field.quoted)]
    quoted = [COLUMNS[field.check] for field in chosen if field.check and text and field.quoted]
    if host:
        unquoted.append(COLUMNS["ho"])
    checks = [Check(tuple(unquoted), '"\\ ' if text else '"\\')]
    if quoted:
        checks.append(Check(tuple(quoted), '"\\'))
    return checks


def _keyed(name: str, field: Field) -> Field:
    """A JSON field with its key."""
    key = f'"{name}":'
    return replace(field, json_raw=key + field.json_raw, json_escaped=key + field.json_escaped)


def _checks(chosen: list[Field], text: bool) -> list[str]:
    """Generated lines that hand a record to ``escaped`` when a client's value holds a quote or a backslash.

    Or, in text formats, a space outside quotes. Control and non-ASCII characters are found once per batch.
    """
    conditions = []
    for field in chosen:
        if not field.check:
            continue
        value = field.check
        breaks = f"'\"' in {value} or '\\\\' in {value}"
        if text and not field.quoted:
            breaks += f" or ' ' in {value}"
        conditions.append(f"({value} is not None and ({breaks}))" if field.quoted else breaks)
    if not conditions:
        return []
    return [f"    if {' or '.join(conditions)}:", "        return escaped(record)"]
