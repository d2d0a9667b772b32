"""edgefleet: a self-hosted CDN edge platform.

The package is layered (see DESIGN.md, "Suggested package layout"):
``cli`` -> ``cloud`` -> ``store`` -> ``api``. ``api`` is pure data and
validation; ``store`` keeps resources; ``cloud`` serves them. The layering is
checked by ``tests/test_layers.py``.
"""

__version__ = "0.1.0"
