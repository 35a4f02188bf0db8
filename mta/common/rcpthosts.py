"""rcpthosts: the domains this server accepts mail for from clients that may not relay.

One job: parse ``control/rcpthosts`` (qmail-control(5): one domain per line, a leading dot
matches every subdomain, ``#`` comments) and answer ``allows(domain)``. Run by smtpd at
RCPT time and by the web app's publisher to validate what it writes. The file is untrusted:
every entry must be a domain (normalised to its lower-case A-label through
``mta.common.address``) or an address literal (``[192.0.2.1]``); a line with anything else
makes the whole file refused. Fail closed: a missing, empty or broken file allows no domain
(qmail accepts everything when the file is missing; we do not). ``morercpthosts`` is not
read: the file is parsed once into a set, so it may hold any number of domains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mta.common.address import AddressError, parse_address_literal, parse_domain
from mta.common.control import ControlError, parse_lines


@dataclass(frozen=True)
class RcptHosts:
    exact: frozenset[str] = field(default_factory=frozenset)
    suffixes: frozenset[str] = field(default_factory=frozenset)  # each with its leading dot

    def allows(self, domain: str) -> bool:
        """``domain`` as ``Address.domain`` gives it (normalised). Exact entry, or any
        ``.suffix`` entry matching one of its parent domains (qmail's rcpthosts.c)."""
        name = domain.lower()
        if name in self.exact:
            return True
        if name.startswith("["):
            return False
        dot = name.find(".")
        while dot >= 0:
            if name[dot:] in self.suffixes:
                return True
            dot = name.find(".", dot + 1)
        return False

    def __len__(self) -> int:
        return len(self.exact) + len(self.suffixes)


NOBODY: Final = RcptHosts()


def parse(data: bytes) -> RcptHosts:
    exact: set[str] = set()
    suffixes: set[str] = set()
    for line in parse_lines(data, name="rcpthosts"):
        entry = line.strip()
        try:
            if entry.startswith("["):
                exact.add(parse_address_literal(entry.encode("ascii")))
            elif entry.startswith("."):
                suffixes.add("." + parse_domain(entry[1:].encode("utf-8"), smtputf8=True))
            else:
                exact.add(parse_domain(entry.encode("utf-8"), smtputf8=True))
        except (AddressError, UnicodeEncodeError) as exc:
            raise ControlError(f"rcpthosts: {entry[:80]!r} is not a domain: {exc}") from exc
    return RcptHosts(frozenset(exact), frozenset(suffixes))
