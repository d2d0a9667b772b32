"""edgefleet: a self-hosted CDN edge platform.

The package is layered (docs/architecture.md, "Layering"): ``cli`` on top;
``cloud`` and ``edge`` (independent of each other) below it; then ``store``,
``sync``, ``gslb``, ``cache``, ``tls``, ``logs`` and ``demo``, independent of
each other; ``api`` (pure data and validation) and ``hashing`` at the bottom.
The contracts are in ``pyproject.toml`` and checked by ``lint-imports``.
"""

__version__ = "0.1.0"
