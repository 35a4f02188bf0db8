"""One way to build a DNS resolver: the configured servers, or the system's, with timeouts.

Used by smtpd (DNSBL, reverse names) and remote (MX). The server list comes from a
validated control file (``dnsservers``); answers are untrusted and are checked by callers.
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.asyncresolver
import dns.nameserver


def make_resolver(nameservers: Iterable[tuple[str, int]] = (), *, timeout: float,
                  lifetime: float | None = None) -> dns.asyncresolver.Resolver:
    """An async resolver asking ``nameservers`` (``(ip, port)`` pairs), else the system's.

    Args:
        timeout: seconds per server query.
        lifetime: seconds for the whole lookup; defaults to ``timeout``.
    """
    servers = list(nameservers)
    if servers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.timeout = timeout
    resolver.lifetime = timeout if lifetime is None else lifetime
    return resolver
