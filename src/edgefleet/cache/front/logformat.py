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

How it stays cheap (every field of a JSON line: about 1.3 µs on the 2-core
VM; escaping each value costs three times that): a line is one f-string with
the values as they are, used when one pass over the client's values
(``bytes.translate`` deleting the plain bytes) leaves nothing: no control
character, quote, backslash or non-ASCII character (nor, in text formats, a
space outside quotes). Otherwise that line is written with every value
escaped. The f-strings are generated once per format and field selection
from the fixed expressions of :data:`FIELDS`, never from config text; the
``time`` text is cached per millisecond.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii
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
    "time": _same('"{when}"', "{when}"),
    "client": _same('"{ip}"', '{ip or "-"}'),  # the socket's address text
    "method": _same('"{me}"', "{me}"),  # one of the parser's known methods
    "host": _same('"{ho}"', '{ho or "-"}'),  # canonical: DNS labels or an IP literal (wire.targets)
    "target": Field('"{ta}"', "{_js(ta)}", '{ta or "-"}', "{_tx(ta)}", "ta"),
    "protocol": _same('"HTTP/{ve}"', "HTTP/{ve}"),
    "status": _same("{st}", "{st}"),
    "bytes": _same("{sent}", "{sent}"),
    "cache": Field('"{cache}"', "{_js(cache)}", '{cache or "-"}', "{_tx(cache)}", "cache"),
    "upstreamMs": _same('{"null" if up is None else _ms(up)}', '{"-" if up is None else _ms(up)}'),
    "ms": _same('{"0.000" if not secs else _ms(secs * 1000.0)}', '{"0.000" if not secs else _ms(secs * 1000.0)}'),
    "tls": _same('{"null" if tls is None else _js(tls)}', "{_tx(tls)}"),
    "userAgent": _header("ua"),
    "referer": _header("ref"),
    "node": _same("{NODE_JSON}", "{NODE_TEXT}"),
    "domain": _same("{_domains(ho) or _domain(ho)}", "{_domains(ho) or _domain(ho)}"),
}
DEFAULT_FIELDS: tuple[FieldName, ...] = get_args(FieldName)
COMBINED = (
    _same("", '{_tx(ip)} - - [{_clf(ts // 1000000000)}] "'),
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


def milliseconds(value: float) -> str:
    return f"{value:.3f}"


# --- times, cached per second ------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ISO: dict[int, str] = {}
_CLF: dict[int, str] = {}


def iso_millis(millis: int) -> str:
    """``2026-12-07T11:50:41.123Z`` (UTC) of ``millis`` since the epoch; the second's text is cached."""
    second, rest = divmod(millis, 1000)
    prefix = _ISO.get(second)
    if prefix is None:
        if len(_ISO) > 64:
            _ISO.clear()
        prefix = _ISO[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{rest:03d}Z"


def iso_at(millis: int, last: list[Any]) -> str:
    """:func:`iso_millis`, kept in ``last`` as [millis, text] for the next line (mostly the same millisecond)."""
    text = iso_millis(millis)
    last[0], last[1] = millis, text
    return text


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


# --- the formatter --------------------------------------------------------------------------------

_PRINTABLE = bytes(range(0x20, 0x7F))
_LOCALS = {
    ("when",): "    millis = ts // 1000000\n    when = _last[1] if millis == _last[0] else _iso_at(millis, _last)",
}
"""Locals the generated functions compute first, when a template uses them."""


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
        self._domain_of = domain_of
        self._domains: dict[str, str] = {}
        self._escape = json_or_null if format == "json" else escape_text
        self.line, self.escaped = self._compile(node)

    def lines(self, records: Sequence[Record]) -> bytes:
        """The lines of ``records``, each ending in ``\\n``: ASCII bytes, one ``write`` for the whole batch."""
        self._domains.clear()  # a reload may have moved a host to another Domain: look again per batch
        try:
            data = "".join(map(self.line, records)).encode("ascii")
        except UnicodeEncodeError:
            return self._checked(records)
        if len(data.translate(None, _PRINTABLE)) != len(records):  # a control character besides the newlines
            return self._checked(records)
        return data

    def _checked(self, records: Sequence[Record]) -> bytes:
        """The slow way, line by line: a line that is not all printable ASCII is written escaped."""
        lines = []
        for record in records:
            line = self.line(record)
            body = line[:-1]
            lines.append(line if body.isascii() and body.isprintable() else self.escaped(record))
        return "".join(lines).encode("ascii")

    def _domain(self, host: str) -> str:
        """The Domain's name, written for this format (config text: escaped, once per host and batch)."""
        text = self._domains.get(host)
        if text is None:
            text = self._domains[host] = self._escape(self._domain_of(host))
        return text

    def _chosen(self) -> tuple[list[Field], str]:
        if self.format == "combined":
            return list(COMBINED), ""
        separator = " " if self.format == "cdn" else ","
        if self.format == "cdn":
            return [FIELDS[name] for name in self.fields], separator
        return [_keyed(name, FIELDS[name]) for name in self.fields], separator

    def _compile(self, node: str) -> tuple[Callable[[Record], str], Callable[[Record], str]]:
        chosen, separator = self._chosen()
        text = self.format != "json"
        raw = separator.join(field.text_raw if text else field.json_raw for field in chosen)
        escaped = separator.join(field.text_escaped if text else field.json_escaped for field in chosen)
        if not text:
            raw, escaped = "{{" + raw + "}}", "{{" + escaped + "}}"
        used = set(re.findall(r"[a-z]+", raw + escaped))
        preamble = ["    ts, me, ho, ta, ve, ua, ref, ip, tls, st, sent, cache, secs, up = record"]
        preamble += [line for names, line in _LOCALS.items() if used.intersection(names)]
        source = [
            "def escaped(record):",
            *preamble,
            f"    return f'''{escaped}\\n'''",
            "def line(record):",
            *preamble,
            *_checks(chosen, text),
            f"    return f'''{raw}\\n'''",
        ]
        namespace = self._namespace(node)
        exec(compile("\n".join(source), "<access log format>", "exec"), namespace)  # fixed templates only
        return namespace["line"], namespace["escaped"]

    def _namespace(self, node: str) -> dict[str, Any]:
        return {
            "_iso_at": iso_at,
            "_last": [-1, ""],
            "_clf": clf_time,
            "_js": encode_basestring_ascii,
            "_js_opt": json_or_null,
            "_tx": escape_text,
            "_tq": escape_quoted,
            "_ms": milliseconds,
            "_domain": self._domain,
            "_domains": self._domains.get,
            "NODE_JSON": encode_basestring_ascii(node),
            "NODE_TEXT": escape_text(node),
        }


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
