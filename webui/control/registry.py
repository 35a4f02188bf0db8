"""The one-value control files an admin may set from the Settings page, with qmail's
defaults (qmail-control(5), qmail-send(8), qmail-smtpd(8), qmail-remote(8)) and a validator
for each. Values are untrusted (forms, API, CLI, import-qmail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from mta.common.control import ControlError, parse_number
from webui.core.validators import normalise_domain, parse_address, refuse_control_characters


def _number(minimum: int, maximum: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        refuse_control_characters(value)
        try:
            parse_number(value.strip().encode("ascii", "replace") + b"\n", name="value",
                         minimum=minimum, maximum=maximum)
        except ControlError as exc:
            raise ValidationError(str(exc).replace("value: ", "")) from exc
        return value.strip()
    return check


def _domain(value: str) -> str:
    return normalise_domain(value)


def _local(value: str) -> str:
    refuse_control_characters(value)
    text = value.strip()
    if not text or any(c in text for c in "@ :,"):
        raise ValidationError("a local part without @, spaces, ':' or ','")
    return text


def _address(value: str) -> str:
    return str(parse_address(value))


def _badmailfrom(value: str) -> str:
    out = []
    for line in value.replace("\r\n", "\n").split("\n"):
        item = line.strip()
        if not item:
            continue
        if item.startswith("@"):
            out.append("@" + normalise_domain(item[1:]))
        else:
            out.append(str(parse_address(item)))
    return "\n".join(out)


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: str
    help: str
    check: Callable[[str], str]
    multiline: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("me", "the host's name", "this host's fully qualified name", _domain),
    SettingSpec("defaultdomain", "me", "domain added to addresses without one", _domain),
    SettingSpec("helohost", "me", "name given in HELO/EHLO when sending", _domain),
    SettingSpec("bouncefrom", "MAILER-DAEMON", "local part of the bounce sender", _local),
    SettingSpec("bouncehost", "me", "domain of the bounce sender", _domain),
    SettingSpec("doublebounceto", "postmaster", "where double bounces go (local part)", _local),
    SettingSpec("doublebouncehost", "me", "domain for doublebounceto", _domain),
    SettingSpec("databytes", "0 (no limit)", "largest message smtpd accepts, bytes",
                _number(0, 2**40)),
    SettingSpec("timeoutsmtpd", "1200", "seconds smtpd waits for the client", _number(1, 86400)),
    SettingSpec("timeoutremote", "1200", "seconds remote waits for the server",
                _number(1, 86400)),
    SettingSpec("timeoutconnect", "60", "seconds remote waits for a connection",
                _number(1, 3600)),
    SettingSpec("concurrencylocal", "20", "simultaneous local deliveries", _number(1, 1000)),
    SettingSpec("concurrencyremote", "20", "simultaneous remote deliveries",
                _number(1, 10000)),
    SettingSpec("queuelifetime", "604800 (one week)", "seconds a message may stay queued",
                _number(0, 2**32)),
    SettingSpec("badmailfrom", "(none)", "senders refused by smtpd: address or @domain, one a line",
                _badmailfrom, multiline=True),
)
BY_NAME: dict[str, SettingSpec] = {s.name: s for s in SETTINGS}
