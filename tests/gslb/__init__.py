"""Tests of the GSLB; helpers shared by its modules."""

import socket


def ipv6_loopback() -> bool:
    """Whether this machine can bind ``::1`` (some containers have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
