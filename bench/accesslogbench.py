"""``bench/cache_vs_nginx.py --access-log on``: both caches log every request to a file.

How: nginx gets ``access_log <tmp>/nginx-access.log edgefleet_json`` with a
``log_format`` that writes the fields of edgefleet's default JSON line
(``escape=json``) and NO ``buffer=``/``flush=``: that is what a default
nginx does, one ``write()`` per request. edgefleet runs with its default
``accessLog`` (JSON lines to ``access.log`` beside its config, written in
batches every 200 ms or 256 KiB). A third server, edgefleet with its log off,
runs the same load, so one run also shows what the log costs edgefleet
(target: at most 10% slower).

``--access-log off`` (the default) keeps the figures of earlier runs: both
logs off.
"""

from __future__ import annotations

NGINX_LOG_FORMAT = (
    'log_format edgefleet_json escape=json \'{"time":"$time_iso8601","client":"$remote_addr",'
    '"method":"$request_method","host":"$host","target":"$request_uri","protocol":"$server_protocol",'
    '"status":$status,"bytes":$body_bytes_sent,"cache":"$upstream_cache_status",'
    '"upstreamMs":"$upstream_response_time","ms":$request_time,"tls":"$ssl_protocol",'
    '"userAgent":"$http_user_agent","referer":"$http_referer","node":"bench","domain":"$server_name"}\';'
)
"""nginx's line with the fields of edgefleet's default JSON line."""

NOLOG = "edgefleet-nolog"
"""The name of the third server: edgefleet without its access log."""


def nginx_conf(conf: str, home: str) -> str:
    """nginx.conf text with the access log on (unbuffered, nginx's default)."""
    logging = f"    {NGINX_LOG_FORMAT}\n    access_log {home}/nginx-access.log edgefleet_json;"
    return conf.replace("    access_log off;", logging)


def cache_yaml(config: str) -> str:
    """cache.yaml text with edgefleet's default access log (the bench's config turns it off)."""
    return config.replace("accessLog: {sample: 0}\n", "")


def describe() -> str:
    return (
        "# access logs on: nginx access_log <tmp>/nginx-access.log, JSON with edgefleet's fields, unbuffered "
        "(one write per request, nginx's default); edgefleet's default accessLog (JSON lines, batched every "
        f"200 ms or 256 KiB); '{NOLOG}': edgefleet with its log off, same load"
    )


def with_and_without(with_log: float, without_log: float) -> str:
    """The extra line under a row: what the log costs edgefleet."""
    return (
        f"         edgefleet without access log: {without_log:,.0f} req/s; "
        f"with/without {with_log / without_log:.2f} (target >= 0.90)"
    )
