"""``edgefleet rules test DOMAIN --url URL``: run a Domain's edge rules on one request and explain them.

How: the command gets the Domain from the cloud (or reads it from ``--file``, a manifest not yet
applied, validated by the same schema; Secrets in that file are used for token checks), builds the
request the URL (canonicalised as the caches' parser does), ``--method``, ``--header``, ``--cookie`` and
``--client`` describe, and runs THE engine the caches run (:mod:`edgefleet.cache.policy.rules`: same
compile, same evaluation, at ``--at`` or now). It prints a table of the rules (matched or not and why,
what each action did; rules after a ``stop`` or a synthetic answer are shown as not evaluated) and the
outcome: the answer the cache would send itself (status, Location, headers), or the URL the cache looks
up and fetches, the headers sent upstream and to the client, the cache key additions, the origin and
cache overrides. ``-o json|yaml`` gives the same as data.

Token auth needs the key values. An admin's token reads the Secrets the rules name and the check runs
for real; a viewer reads them redacted, so the check is skipped and reported as unknown (caches
always check); a Secret that does not exist is reported, and the check fails closed as on a cache.
Country and region come from ``--geo``; without it, from the table the cloud publishes to the nodes
(the GSLB's ``--geo``, :mod:`edgefleet.cli.geosource`, shared with ``edgefleet route``: downloaded with an
admin token, checked against its SHA-256 and kept in ``~/.cache/edgefleet/geo/`` by digest), so the answer
is the one the caches give;
with none published (or a viewer token, which may not read blobs: a note says so), examples/geo.csv
when it exists. A rate limit
starts with full buckets here, so one request is always within it.

Why the same engine: an explanation that used other code could disagree with the caches; this one
cannot, and ``docs/rules.md`` examples are checked with it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from edgefleet.cli.common import ContextOpt, ServerOpt, TokenOpt, api, console, fail

if TYPE_CHECKING:
    from rich.table import Table

    from edgefleet.api.rules import Rule
    from edgefleet.cache.policy.rules import CompileEnv, HeaderOp, RequestInfo, RuleTrace

Document = dict[str, Any]
DEFAULT_GEO = Path("examples/geo.csv")
REDACTED = "<redacted>"

rules_app = typer.Typer(help="Edge rules: test a Domain's rules on a request (docs/rules.md).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``rules`` to the ``edgefleet`` app."""
    app.add_typer(rules_app, name="rules")


def parse_pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    """``K=V`` (or ``K: V`` for headers) items -> pairs; ValueError naming the option otherwise."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep and option == "--header":
            name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"{option} {item!r}: write NAME=VALUE")
        pairs.append((name.strip(), value.strip()))
    return pairs


def parse_at(text: str | None) -> float:
    """``--at``: POSIX seconds or an RFC 3339 timestamp; now when absent."""
    if text is None:
        return time.time()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    from edgefleet.api.common import parse_timestamp

    return parse_timestamp(text).timestamp()


def build_request(
    url: str, method: str, headers: list[tuple[str, str]], cookies: list[tuple[str, str]], client: str
) -> RequestInfo:
    """The engine's request for an absolute URL (or a path, then the Host header or www.example.com)."""
    import ipaddress

    from edgefleet.cache.policy.rules import RequestInfo

    parts = urlsplit(url)
    if parts.scheme and parts.scheme not in ("http", "https"):
        raise ValueError(f"--url {url!r}: only http and https URLs")
    host_header = next((value for name, value in headers if name.lower() == "host"), None)
    host = (parts.hostname or host_header or "").lower()
    if not host:
        raise ValueError(f"--url {url!r}: give an absolute URL (http://host/path) or a Host header")
    try:
        ipaddress.ip_address(client)
    except ValueError:
        raise ValueError(f"--client {client!r} is not an IP address") from None
    all_headers = list(headers)
    if host_header is None:
        all_headers.insert(0, ("Host", host))
    if cookies:
        all_headers.append(("Cookie", "; ".join(f"{name}={value}" for name, value in cookies)))
    from edgefleet.cache.errors import BadRequest
    from edgefleet.cache.wire.targets import canonical_target

    try:  # the caches' parser canonicalises the target before any rule sees it
        path, _, query = canonical_target(_target(parts.path, parts.query)).partition("?")
    except BadRequest as exc:
        raise ValueError(f"--url {url!r}: a cache answers 400 to this path ({exc})") from None
    return RequestInfo(method.upper(), parts.scheme or "http", host, path, query, all_headers, client)


def _target(path: str, query: str) -> str:
    return (path or "/") + (f"?{query}" if query else "")


def explain(rules: list[Rule], request: RequestInfo, env: CompileEnv, now: float, *, status: int = 200) -> Document:
    """The explanation as data: the rules' traces and the outcome (what ``-o json`` prints)."""
    from edgefleet.cache.policy.rules import compile_rules

    program = compile_rules(rules, env)
    from edgefleet.api.common import format_timestamp

    moment = datetime.fromtimestamp(now, UTC)
    base: Document = {"request": _request_document(request), "at": format_timestamp(moment)}
    if program is None:
        return {**base, "rules": [], "outcome": {"action": "serve", "url": _url(request.path, request.query)}}
    outcome = program.on_request(request, now, explain=True)
    traces = list(outcome.trace)
    result: Document = {"action": "respond" if outcome.respond is not None else "serve"}
    if outcome.respond is not None:
        answer = outcome.respond
        result["status"] = answer.status
        result["reason"] = answer.reason
        result["headers"] = [f"{name}: {value}" for name, value in answer.headers]
        if answer.body:
            result["body"] = answer.body.decode("utf-8", "replace")
    else:
        origin_out = program.on_origin_response(request, outcome, status, [], explain=True)
        client_out = program.on_client_response(request, outcome, status, [], explain=True)
        traces += origin_out.trace + client_out.trace
        result.update(
            url=_url(outcome.path, outcome.query),
            rewritten=outcome.rewritten,
            origin=outcome.origin,
            originPathPrefix=outcome.origin_path_prefix or None,
            cacheKeyExtra=outcome.key_extra or None,
            ttl=origin_out.ttl if origin_out.ttl is not None else outcome.ttl,
            bypass=outcome.bypass or origin_out.bypass,
            variants=outcome.variant,
            requestHeaders=_ops(outcome.request_headers),
            storedHeaders=_ops(origin_out.headers),
            responseHeaders=_ops(client_out.headers),
        )
    return {**base, "rules": [_trace_document(trace) for trace in traces], "outcome": result}


def _url(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _request_document(request: RequestInfo) -> Document:
    return {
        "method": request.method,
        "url": f"{request.scheme}://{request.host}{_url(request.path, request.query)}",
        "client": request.client_ip,
        "headers": [f"{name}: {value}" for name, value in request.headers],
    }


def _ops(ops: list[HeaderOp]) -> list[str]:
    return [f"{op.op} {op.name}" + (f": {op.value}" if op.op != "remove" else "") for op in ops]


def _trace_document(trace: RuleTrace) -> Document:
    return {
        "name": trace.name,
        "phase": trace.phase,
        "matched": trace.matched,
        "evaluated": not trace.skipped,
        "why": trace.reason,
        "actions": [
            f"{_camel(step.action)}: {line}" if line else _camel(step.action)
            for step in trace.actions
            for line in (step.detail.splitlines() or [""])
        ],
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def rules_table(rows: list[Document]) -> Table:
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header in ("RULE", "PHASE", "MATCHED", "WHY", "ACTIONS"):
        grid.add_column(header, no_wrap=header in ("RULE", "PHASE", "MATCHED"))
    for row in rows:
        matched = "yes" if row["matched"] else ("-" if not row["evaluated"] else "no")
        grid.add_row(row["name"], row["phase"], matched, row["why"], "\n".join(row["actions"]) or "-")
    return grid


def outcome_lines(outcome: Document) -> list[str]:
    """The outcome as readable lines."""
    if outcome["action"] == "respond":
        lines = [f"outcome: the cache answers {outcome['status']} itself ({outcome['reason']}); no lookup, no origin"]
        lines += [f"  {header}" for header in outcome["headers"]]
        if outcome.get("body"):
            lines.append(f"  body: {outcome['body']!r}")
        return lines
    lines = [
        f"outcome: served from the cache or the origin as {outcome['url']}"
        + (" (rewritten)" if outcome.get("rewritten") else "")
    ]
    labels = (
        ("origin", "origin"),
        ("originPathPrefix", "origin path prefix"),
        ("cacheKeyExtra", "cache key adds"),
    )
    lines += [f"  {label}: {outcome[key]}" for key, label in labels if outcome.get(key) is not None]
    if outcome.get("ttl") is not None:
        lines.append(f"  ttl: {outcome['ttl']:g}s (overrides the cache policy)")
    if outcome.get("bypass"):
        lines.append("  cache: bypassed")
    if outcome.get("variants"):
        lines.append(f"  variants: {', '.join(outcome['variants'])}")
    for key, label in (
        ("requestHeaders", "to upstream"),
        ("storedHeaders", "stored"),
        ("responseHeaders", "to client"),
    ):
        lines += [f"  {label}: {op}" for op in outcome.get(key, [])]
    return lines


def _secrets(session: Any, rules: list[Rule], notes: list[str]) -> tuple[dict[str, dict[str, str]], bool]:
    """The Secrets token rules name (name -> data) and whether token checks must be skipped."""
    from edgefleet.api.meta import kind_info
    from edgefleet.api.rules import secret_refs
    from edgefleet.cli.client import ClientError

    values: dict[str, dict[str, str]] = {}
    skip = False
    for name in sorted({secret for secret, _ in secret_refs(rules)}):
        if session is None:
            notes.append(f"Secret {name}: not read (no server); token checks are skipped: result unknown")
            skip = True
            continue
        try:
            data = session.get(kind_info("Secret"), name).get("spec", {}).get("data", {})
        except ClientError as exc:
            if exc.code == 404:
                notes.append(f"Secret {name} does not exist: caches fail closed (403) on its token checks")
                continue
            notes.append(f"Secret {name}: cannot read it ({exc}); token checks are skipped: result unknown")
            skip = True
            continue
        if any(value == REDACTED for value in data.values()):
            notes.append(
                f"Secret {name} is redacted for this token (viewer); token checks are skipped: result "
                "unknown (use an admin token to check signatures)"
            )
            skip = True
        values[name] = {key: value for key, value in data.items() if isinstance(value, str)}
    return values, skip


def _geo(path: Path | None, notes: list[str]) -> Any:
    from edgefleet.cache.policy.rules import geo_from
    from edgefleet.cli.geosource import local_note
    from edgefleet.geo import GeoDatabase

    if path is None:
        path = DEFAULT_GEO if DEFAULT_GEO.exists() else None
        if path is not None:
            notes.append(local_note(path))
    if path is None:
        notes.append("no geo table (--geo): country and region conditions never hold")
        return None
    return geo_from(GeoDatabase(path))


def _uses_geo(rules: list[Rule]) -> bool:
    """Whether a rule matches on country or region (the caches read a geo table only then)."""
    return any(rule.match.country is not None or rule.match.region is not None for rule in rules)


def _from_file(file: Path, domain: str) -> tuple[list[Rule], dict[str, dict[str, str]]]:
    """The Domain's rules from a manifest file, and the Secrets the file holds (name -> data)."""
    from edgefleet.cli.manifests import ManifestError, load_manifests

    try:
        manifests = load_manifests([str(file)])
    except ManifestError as exc:
        fail(str(exc))
    found = [m for m in manifests if m.info.kind == "Domain" and m.resource.metadata.name == domain]
    if not found:
        names = [m.resource.metadata.name for m in manifests if m.info.kind == "Domain"]
        fail(f"{file}: no Domain named {domain!r}", f"Domains in the file: {', '.join(names) or 'none'}")
    secrets = {m.resource.metadata.name: dict(m.resource.spec.data) for m in manifests if m.info.kind == "Secret"}
    return list(found[0].resource.spec.rules), secrets


def _from_server(session: Any, domain: str) -> list[Rule]:
    from edgefleet.api.meta import kind_info, parse

    document = session.get(kind_info("Domain"), domain)
    return list(parse(document, expected_kind="Domain").spec.rules)


@rules_app.command("test")
def test(
    domain: Annotated[str, typer.Argument(help="Name of the Domain whose rules run")],
    url: Annotated[str, typer.Option("--url", help="The request URL, e.g. https://www.example.com/video/a.mp4?x=1")],
    header: Annotated[list[str], typer.Option("--header", "-H", help="Request header NAME=VALUE (repeatable)")] = [],  # noqa: B006
    cookie: Annotated[list[str], typer.Option("--cookie", help="Request cookie NAME=VALUE (repeatable)")] = [],  # noqa: B006
    client: Annotated[str, typer.Option("--client", help="The client's IP address")] = "192.0.2.1",
    method: Annotated[str, typer.Option("--method", "-X", help="Request method")] = "GET",
    at: Annotated[str | None, typer.Option("--at", help="Evaluate at this time: RFC 3339 or POSIX seconds")] = None,
    status: Annotated[int, typer.Option("--status", help="Origin status assumed for the response phases")] = 200,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the Domain from this manifest instead of the cloud")
    ] = None,
    geo: Annotated[Path | None, typer.Option(help=f"Geo table for country/region; default {DEFAULT_GEO}")] = None,
    site_nodes: Annotated[int, typer.Option(help="Nodes in the site (divides scope: site rate limits)")] = 1,
    output: Annotated[str, typer.Option("--output", "-o", help="text, json or yaml")] = "text",
    server: ServerOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Run DOMAIN's edge rules on one request with the caches' own engine.

    Shows which rules matched and why, what each did, and the outcome: the answer the cache sends itself
    (redirect, deny, 403, 429, CORS preflight) or the URL it looks up and fetches, with the headers sent
    upstream and to the client, the cache key additions, the origin and cache overrides. --file tests a
    manifest before `edgefleet apply`. Token checks need an admin token (viewers see Secrets redacted).
    """
    from edgefleet.cache.policy.rules import CompileEnv
    from edgefleet.cli.geosource import published_geo
    from edgefleet.cli.output import dump

    if output not in ("text", "json", "yaml"):
        fail(f"unknown output format {output!r}; use text, json or yaml")
    notes: list[str] = []
    try:
        request = build_request(url, method, parse_pairs(header, "--header"), parse_pairs(cookie, "--cookie"), client)
        now = parse_at(at)
    except ValueError as exc:
        fail(str(exc))
    if site_nodes < 1:
        fail("--site-nodes must be at least 1")
    if file is not None:
        rules, in_file = _from_file(file, domain)
        secrets, skip = _secrets_maybe(rules, in_file, (server, token, context), notes)
    else:
        with api(server, token, context) as session:
            rules = _from_server(session, domain)
            secrets, skip = _secrets(session, rules, notes)
            if geo is None and _uses_geo(rules):
                geo = published_geo(session, notes)
    try:
        geo_lookup = _geo(geo, notes if _uses_geo(rules) else [])  # a table no rule reads needs no note
    except (ValueError, OSError) as exc:
        fail(f"geo table {geo}: {exc}")
    env = CompileEnv(secrets=secrets, geo=geo_lookup, node_count=site_nodes, skip_token_auth=skip)
    document = {"domain": domain, **explain(rules, request, env, now, status=status), "notes": notes}
    if output != "text":
        print(dump(document, output))
        return
    out = console()
    if not rules:
        out.print(f"Domain {domain} has no rules: requests are served as they come.", markup=False)
    else:
        out.print(rules_table(document["rules"]))
    out.print("\n".join(outcome_lines(document["outcome"])), markup=False, highlight=False)
    for note in notes:
        out.print(f"note: {note}", markup=False, highlight=False)


def _secrets_maybe(
    rules: list[Rule],
    in_file: dict[str, dict[str, str]],
    connection_options: tuple[str | None, str | None, str | None],
    notes: list[str],
) -> tuple[dict[str, dict[str, str]], bool]:
    """With ``--file``: the Secrets the file holds, the others read from the cloud when one is configured."""
    from edgefleet.api.rules import secret_refs

    wanted = {name for name, _ in secret_refs(rules)}
    rest = [rule for rule in rules if any(ref[0] not in in_file for ref in secret_refs([rule]))]
    if not wanted - set(in_file):
        return {name: in_file[name] for name in wanted}, False
    from edgefleet.cli import client as http
    from edgefleet.cli import config

    try:
        connection = config.resolve(*connection_options)
        session = http.ApiClient(connection.server, connection.token, trust=connection.trust)
    except (config.ConfigError, http.ClientError):
        found, skip = _secrets(None, rest, notes)
    else:
        try:
            found, skip = _secrets(session, rest, notes)
        finally:
            session.close()
    return {**found, **{name: in_file[name] for name in wanted & set(in_file)}}, skip
