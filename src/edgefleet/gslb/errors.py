"""The GSLB package's exception hierarchy.

Remote bad input and local mistakes are kept apart, as docs/architecture.md asks of every package:
``DnsFormatError`` is a malformed query from the network (answered with
FORMERR, or dropped when not even its id can be read; it never takes the
server down); ``NotServed`` is a well-formed question about a name the GSLB
is not authoritative for (REFUSED); ``GeoTableError`` is an operator's bad
geo table (the previous table stays in use; defined by :mod:`edgefleet.geo`,
a ``ValueError``). Anything else is a bug.
"""

from __future__ import annotations

from edgefleet.geo import GeoTableError

__all__ = ["DnsFormatError", "GeoTableError", "GslbError", "NotServed"]


class GslbError(Exception):
    """Base of every error the gslb package raises on purpose."""


class DnsFormatError(GslbError):
    """A DNS message is malformed; ``query_id`` is its id when the header was readable."""

    def __init__(self, message: str, query_id: int | None = None) -> None:
        super().__init__(message)
        self.query_id = query_id


class NotServed(GslbError):
    """A question about a name outside every zone and hostname the GSLB serves."""
