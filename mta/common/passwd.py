"""passwd: SMTP AUTH accounts in Dovecot's passwd-file format, hashed, checked in constant time.

One job: hash a password (``hash_password``), check one (``verify``), and parse
``control/passwd`` (``parse``): ``address:{SCHEME}hash::::::`` per line, the same file
Dovecot reads for IMAP/POP3 (passwd-file driver, doc.dovecot.org "Passwd-file"). Called by
smtpd for AUTH PLAIN/LOGIN, and by the web app and ``postern mailbox add`` to hash.

Scheme: ``{ARGON2ID}`` with argon2-cffi's defaults (RFC 9106 second recommended
parameters). Debian 12's Dovecot 2.3.19 verifies these hashes: checked with
``doveadm pw -t '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$...' -p secret`` (verified), and
tests/mta/common/test_passwd.py repeats the check when doveadm is installed.
``{ARGON2I}``, ``{SHA512-CRYPT}`` and ``{SHA256-CRYPT}`` are accepted when reading (older
files); any other scheme (``{PLAIN}``, ``{MD5}``, ...) is refused by the parser.

Untrusted input: the file (a publisher or an editor wrote it; every line is validated, a
bad one refuses the whole file) and the client's username and password. Argon2 verification
costs tens of milliseconds and 64 MiB; smtpd runs it in a small thread pool, never on the
event loop. An unknown user costs the same as a wrong password (a dummy hash is checked).
"""

from __future__ import annotations

import functools
import hmac
import re
import warnings
from dataclasses import dataclass, field
from typing import Final

import argon2

from mta.common.address import AddressError, parse_mailbox
from mta.common.control import ControlError, parse_lines

SCHEME: Final = "ARGON2ID"
READ_SCHEMES: Final = frozenset({"ARGON2ID", "ARGON2I", "SHA512-CRYPT", "SHA256-CRYPT"})
MAX_PASSWORD: Final = 1024          # octets; longer is refused before hashing (cost bound)
_LINE = re.compile(r"(?P<user>[^:]+):\{(?P<scheme>[A-Z0-9-]+)\}(?P<hash>[^:]+)(?P<rest>(?::[^:]*){0,6})\Z")
_HASHER: Final = argon2.PasswordHasher()
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown users against (made on first use: hashing costs ~0.1-0.8 s
    of CPU, which importers such as the web app should not pay at import)."""
    return "{ARGON2ID}" + _HASHER.hash("postern dummy password for unknown users")


def hash_password(plain: str) -> str:
    """``{ARGON2ID}$argon2id$...`` for ``plain``; the form stored in control/passwd."""
    if len(plain.encode("utf-8")) > MAX_PASSWORD:
        raise ValueError(f"password longer than {MAX_PASSWORD} octets")
    if not plain or any(ord(c) < 0x20 or ord(c) == 0x7F for c in plain):
        raise ValueError("empty password or control characters in it")
    return "{" + SCHEME + "}" + _HASHER.hash(plain)


def verify(stored: str, plain: str | bytes) -> bool:
    """True if ``plain`` matches ``stored`` (``{SCHEME}hash``). Never raises on bad input."""
    try:
        secret = plain.encode("utf-8") if isinstance(plain, str) else plain
    except UnicodeEncodeError:
        return False
    if len(secret) > MAX_PASSWORD or not stored.startswith("{"):
        return False
    scheme, _, hashed = stored[1:].partition("}")
    if scheme in ("ARGON2ID", "ARGON2I"):
        try:
            return bool(_HASHER.verify(hashed, secret))  # libargon2 compares in constant time
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated module; only for files written before ARGON2ID
        try:
            computed = crypt.crypt(secret.decode("utf-8"), hashed)
        except (UnicodeDecodeError, ValueError, OSError):
            return False
        return computed is not None and hmac.compare_digest(computed.encode(), hashed.encode())
    return False


def username_key(name: str) -> str:
    """Lookup key: ASCII-lowercased, like Dovecot's default ``auth_username_format = %Lu``."""
    return name.translate(_ASCII_UPPER)


@dataclass(frozen=True)
class Accounts:
    hashes: dict[str, str] = field(default_factory=dict)

    def check(self, username: str, password: bytes) -> bool:
        """Constant work whether or not the user exists."""
        stored = self.hashes.get(username_key(username))
        if stored is None:
            verify(_dummy_hash(), password)
            return False
        return verify(stored, password)

    def __len__(self) -> int:
        return len(self.hashes)


NOBODY: Final = Accounts()


def parse(data: bytes) -> Accounts:
    out: dict[str, str] = {}
    for number, line in enumerate(parse_lines(data, name="passwd"), start=1):
        where = f"passwd entry {number}"
        m = _LINE.match(line)
        if m is None:
            raise ControlError(f"{where}: expected address:{{SCHEME}}hash::::::")
        user, scheme = m.group("user"), m.group("scheme")
        try:
            parse_mailbox(user.encode("utf-8"), smtputf8=True)
        except AddressError as exc:
            raise ControlError(f"{where}: {user[:80]!r} is not an address: {exc}") from exc
        if scheme not in READ_SCHEMES:
            raise ControlError(f"{where}: scheme {{{scheme}}} refused; use {{{SCHEME}}}")
        key = username_key(user)
        if key in out:
            raise ControlError(f"{where}: {user!r} listed twice")
        out[key] = "{" + scheme + "}" + m.group("hash")
    return Accounts(out)


def render_line(address: str, hashed: str) -> str:
    """One passwd line for the publisher: ``address:{SCHEME}hash::::::``."""
    line = f"{address}:{hashed}::::::"
    parse(line.encode("utf-8"))  # the publisher never writes what we would refuse
    return line
