"""The daemons' own parsers, imported where they exist (SMTPD, SEND and REMOTE land them in
mta/ during the same sprint). The web app validates with these, never with second copies:
until a module exists its entry is ``None`` and the publisher skips that check (the file is
still checked by ``mta.common.control.parse_lines`` and the renderer's own refusals).

Called by the publisher, the forms and the access-rule tester. Inputs are rendered files.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def passwd() -> ModuleType | None:
    return optional("mta.common.passwd")


def tcprules() -> ModuleType | None:
    return optional("mta.common.tcprules")


def rcpthosts() -> ModuleType | None:
    return optional("mta.common.rcpthosts")


def addressbook() -> ModuleType | None:
    return optional("mta.common.addressbook")


def routes() -> ModuleType | None:
    return optional("mta.remote.routes")


def hash_password(plain: str) -> str:
    """``{SCHEME}hash`` by mta.common.passwd: the scheme smtpd's AUTH and Dovecot verify."""
    from mta.common.passwd import hash_password as smtpd_hash

    return smtpd_hash(plain)
