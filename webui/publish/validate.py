"""Check rendered control files with the daemons' own parsers before any is written.

Called by the publish task with ``{name: bytes}``. Every file goes through
``mta.common.control.parse_lines`` (control characters, UTF-8); each file with an owner's
parser in mta/ is parsed by it (smtpd: rcpthosts, tcp.smtp, passwd; send: locals,
mailboxes, aliases and the combined address book, which refuses alias loops; remote:
smtproutes, relayauth); one-number files by ``parse_number``. A parser that has not landed
yet is skipped (webui/core/mta_parsers.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from mta.common.control import ControlError, parse_lines, parse_number
from webui.core import mta_parsers

NUMBER_FILES = frozenset({"databytes", "timeoutsmtpd", "timeoutremote", "timeoutconnect",
                          "concurrencylocal", "concurrencyremote", "queuelifetime"})


class InvalidPublish(ValueError):
    """A rendered file one of the daemons would refuse; ``str()`` names file and reason."""


def validate(files: Mapping[str, bytes]) -> None:
    try:
        _validate(files)
    except (ControlError, ValueError) as exc:
        raise InvalidPublish(str(exc)) from exc


def _validate(files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        parse_lines(data, name=name)
        if name in NUMBER_FILES:
            parse_number(data, name=name)
    smtpd_rcpthosts = mta_parsers.rcpthosts()
    if smtpd_rcpthosts is not None and "rcpthosts" in files:
        smtpd_rcpthosts.parse(files["rcpthosts"])
    tcprules = mta_parsers.tcprules()
    if tcprules is not None and "tcp.smtp" in files:
        tcprules.parse(files["tcp.smtp"])
    passwd = mta_parsers.passwd()
    if passwd is not None and "passwd" in files:
        passwd.parse(files["passwd"])
    book = mta_parsers.addressbook()
    if book is not None:
        locals_ = book.parse_locals(files.get("locals", b""))
        mailboxes = book.parse_mailboxes(files.get("mailboxes", b""))
        aliases = book.parse_aliases(files.get("aliases", b""))
        book.AddressBook.build(locals=locals_, mailboxes=mailboxes, aliases=aliases)
    routes = mta_parsers.routes()
    if routes is not None:
        routes.parse_smtproutes(files.get("smtproutes", b""))
        routes.parse_relayauth(files.get("relayauth", b""))
