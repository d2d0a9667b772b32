"""``edgefleet cache`` and ``edgefleet origin``: the data plane, run alone.

How: thin typer wrappers. ``cache`` runs the caching proxy from a config
file (:mod:`edgefleet.cache.config` documents it; ``docs/cache.md`` has a
walk-through); ``origin`` runs the demo/test origin server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cache.errors import CacheError
from edgefleet.cli.common import fail


def register(app: typer.Typer) -> None:
    app.command("cache")(cache)
    app.command("origin")(origin)


def cache(
    config: Annotated[Path, typer.Option("--config", "-c", help="Cache config file (YAML); see docs/cache.md")],
    check: Annotated[bool, typer.Option("--check", help="Validate the config file and exit")] = False,
    load_window: Annotated[
        float,
        typer.Option(
            min=0.6,
            max=300.0,
            help="Seconds the load figures of /status (egressGbps, requestsPerSecond; the GSLB sheds load on "
            "them) average over; the traffic window's slots are a sixth of it",
        ),
    ] = 60.0,
) -> None:
    """Run the edgefleet cache server: an RFC 9111 caching reverse proxy with site and parent tiers.

    It serves the Domains of its config on `listen` with `workers` processes,
    keeps objects in memory and on disk, and offers purge, prefetch, status and
    Prometheus metrics on `admin.listen`. SIGHUP reloads the config file
    without dropping connections or cached objects.
    """
    from edgefleet.cache.config import load_config
    from edgefleet.cache.front.master import run_cache

    try:
        if check:
            parsed = load_config(config)
            typer.echo(f"{config}: valid ({len(parsed.domains)} domains, listen {parsed.listen})")
            return
        run_cache(config, load_window)
    except CacheError as exc:
        fail(str(exc), code=2)
    except KeyboardInterrupt:
        pass


def origin(
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on")] = "127.0.0.1:8080",
) -> None:
    """Run the demo origin: a sample site plus programmable test content (/bytes/N?cc=...)."""
    from edgefleet.demo import origin as origin_server

    origin_server.main(["--listen", listen])
