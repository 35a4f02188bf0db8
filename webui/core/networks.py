"""Client networks as admins type them: CIDR (``10.0.0.0/8``, ``2001:db8::/32``), a single
address, or a tcprules prefix ending in a dot (``192.168.1.``). Pure functions; input is
untrusted (forms, API, CLI). Used by relay networks and access rules for normalisation and
overlap checks; the rendered line is checked again with mta.common.tcprules.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from django.core.exceptions import ValidationError

from webui.core.validators import refuse_control_characters

_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PREFIX: Final = re.compile(rf"(?:{_OCTET}\.){{1,3}}")
_CHARS: Final = re.compile(r"[0-9A-Fa-f:./]{2,49}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> tuple[str, Network]:
    """``text`` -> (the form to write in tcp.smtp, the network it covers).

    Raises:
        ValidationError: not an address, prefix or CIDR block; or a CIDR with host bits set.
    """
    refuse_control_characters(text)
    value = text.strip()
    if _PREFIX.fullmatch(value):
        parts = value[:-1].split(".")
        padded = ".".join(parts + ["0"] * (4 - len(parts)))
        return value, ipaddress.IPv4Network(f"{padded}/{8 * len(parts)}")
    if not _CHARS.fullmatch(value):
        raise ValidationError("not an IP address, a prefix like 192.168.1. or a CIDR block",
                              code="network")
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=True)
            if net.prefixlen == net.max_prefixlen:
                return str(net.network_address), net
            return str(net), net
        addr = ipaddress.ip_address(value)
    except ValueError as exc:
        message = str(exc)
        if "host bits set" in message:
            message = f"{value} has host bits set; did you mean {ipaddress.ip_network(value, strict=False)}?"
        raise ValidationError(message, code="network") from exc
    return str(addr), ipaddress.ip_network(addr)


def overlaps(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)  # type: ignore[arg-type]
