"""smtpd's configuration: its control files, each parsed strictly and reloaded on change.

One job: hold one ``ControlFile`` per setting smtpd reads and hand out a consistent
``Settings`` snapshot per connection. Run inside each smtpd worker. Files are untrusted
(the web app's publisher or an editor wrote them): each has a strict parser here or in
``mta/common`` and a fail-closed fallback (docs/control.md lists every file and default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mta.common import dnsbl, passwd, rcpthosts, tcprules
from mta.common.address import Address, AddressError, parse_domain, parse_mailbox
from mta.common.control import (ControlError, ControlFile, Memo, parse_lines, parse_number,
                                parse_single)

log = logging.getLogger("postern.smtpd")

DEFAULT_TIMEOUT: Final = 1200        # seconds per read (qmail's timeoutsmtpd)
DEFAULT_MAXRCPT: Final = 100         # RFC 5321 §4.5.3.1.8: at least 100 must be accepted
DEFAULT_MAXCONNECTIONS: Final = 1000  # simultaneous sessions, all worker processes together
DEFAULT_MAXCONNIP: Final = 20        # simultaneous connections from one client address
DEFAULT_GREETDELAY: Final = 0        # seconds to wait for early talkers before greeting
DEFAULT_AUTHFAILURES: Final = 5      # failed AUTH per client address per AUTH_WINDOW
AUTH_WINDOW: Final = 900.0           # seconds


@dataclass(frozen=True)
class BadMailFrom:
    """qmail's badmailfrom: exact addresses and ``@domain`` entries, case-insensitive."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    def matches(self, sender: Address | None) -> bool:
        if sender is None:
            return False
        return (str(sender).lower() in self.addresses or sender.domain in self.domains)


def parse_badmailfrom(data: bytes) -> BadMailFrom:
    addresses: set[str] = set()
    domains: set[str] = set()
    for line in parse_lines(data, name="badmailfrom"):
        entry = line.strip()
        try:
            if entry.startswith("@"):
                domains.add(parse_domain(entry[1:].encode("utf-8"), smtputf8=True))
            else:
                addresses.add(str(parse_mailbox(entry.encode("utf-8"), smtputf8=True)).lower())
        except AddressError as exc:
            raise ControlError(f"badmailfrom: {entry[:80]!r}: {exc}") from exc
    return BadMailFrom(frozenset(addresses), frozenset(domains))



def parse_flag(data: bytes) -> bool:
    value = parse_single(data, name="flag file")
    if value not in (None, "0", "1"):
        raise ControlError(f"expected 0 or 1, not {value!r}")
    return value == "1"


@dataclass(frozen=True)
class Settings:
    """One connection's view of the control files."""

    me: str
    greeting: str
    databytes: int            # 0: no limit
    timeout: float
    maxrcpt: int
    maxconnections: int
    maxconnip: int
    greetdelay: float
    authfailures: int
    rules: tcprules.TcpRules
    rcpthosts: rcpthosts.RcptHosts
    accounts: passwd.Accounts
    dnsbl_zones: tuple[str, ...]
    badmailfrom: BadMailFrom
    received_auth: bool       # name the authenticated user in Received:


class Controls:
    """Every file smtpd reads, under ``control_dir``."""

    def __init__(self, control_dir: str | Path, *, check_interval: float = 1.0) -> None:
        d = Path(control_dir)
        kw = {"check_interval": check_interval}

        def num(name: str, lo: int = 0, hi: int = 2**53) -> ControlFile[int | None]:
            return ControlFile(d / name, lambda b: parse_number(b, name=name, minimum=lo,
                                                                  maximum=hi),
                               missing=None, **kw)  # type: ignore[arg-type]
        self.me: ControlFile[str | None] = ControlFile(
            d / "me", lambda b: parse_single(b, name="me"), missing=None, **kw)  # type: ignore[arg-type]
        self.smtpgreeting: ControlFile[str | None] = ControlFile(
            d / "smtpgreeting", lambda b: parse_single(b, name="smtpgreeting"), missing=None,
            **kw)  # type: ignore[arg-type]
        self.databytes = num("databytes")
        self.timeoutsmtpd = num("timeoutsmtpd", 1, 86400)
        self.maxrcpt = num("maxrcpt", 1, 100_000)
        self.maxconnections = num("maxconnections", 1, 1_000_000)
        self.maxconnip = num("maxconnip", 0, 1_000_000)
        self.greetdelay = num("greetdelay", 0, 300)
        self.authfailures = num("authfailures", 1, 1_000_000)
        self.tcp_smtp: ControlFile[tcprules.TcpRules] = ControlFile(
            d / "tcp.smtp", tcprules.parse, missing=tcprules.EMPTY, **kw)  # type: ignore[arg-type]
        self.rcpthosts: ControlFile[rcpthosts.RcptHosts] = ControlFile(
            d / "rcpthosts", rcpthosts.parse, missing=rcpthosts.NOBODY, **kw)  # type: ignore[arg-type]
        self.passwd: ControlFile[passwd.Accounts] = ControlFile(
            d / "passwd", passwd.parse, missing=passwd.NOBODY, **kw)  # type: ignore[arg-type]
        self.dnsbl: ControlFile[tuple[str, ...]] = ControlFile(
            d / "dnsbl", dnsbl.parse, missing=(), **kw)  # type: ignore[arg-type]
        self.badmailfrom: ControlFile[BadMailFrom] = ControlFile(
            d / "badmailfrom", parse_badmailfrom, missing=BadMailFrom(), **kw)  # type: ignore[arg-type]
        self.receivedauth: ControlFile[bool] = ControlFile(
            d / "receivedauth", parse_flag, missing=False, **kw)  # type: ignore[arg-type]
        self._memo: Memo[Settings] = Memo(d, check_interval=check_interval)

    def settings(self) -> Settings:
        """The current settings (one stat of the directory while nothing changed)."""
        return self._memo.get(self._build)

    def _build(self) -> Settings:
        me = self.me.get() or "localhost"
        timeout = self.timeoutsmtpd.get()
        maxrcpt = self.maxrcpt.get()
        maxconn = self.maxconnections.get()
        maxconnip = self.maxconnip.get()
        greetdelay = self.greetdelay.get()
        authfailures = self.authfailures.get()
        return Settings(
            me=me,
            greeting=self.smtpgreeting.get() or me,
            databytes=self.databytes.get() or 0,
            timeout=float(timeout if timeout is not None else DEFAULT_TIMEOUT),
            maxrcpt=maxrcpt if maxrcpt is not None else DEFAULT_MAXRCPT,
            maxconnections=maxconn if maxconn is not None else DEFAULT_MAXCONNECTIONS,
            maxconnip=maxconnip if maxconnip is not None else DEFAULT_MAXCONNIP,
            greetdelay=float(greetdelay if greetdelay is not None else DEFAULT_GREETDELAY),
            authfailures=authfailures if authfailures is not None else DEFAULT_AUTHFAILURES,
            rules=self.tcp_smtp.get(),
            rcpthosts=self.rcpthosts.get(),
            accounts=self.passwd.get(),
            dnsbl_zones=self.dnsbl.get(),
            badmailfrom=self.badmailfrom.get(),
            received_auth=self.receivedauth.get(),
        )
