"""TOTP (RFC 6238) second factor: HMAC-SHA1, 30-second steps, 6 digits, ±1 step of drift.

Called by the TOTP page with a code typed by the user (untrusted: six ASCII digits only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from typing import Final

STEP: Final = 30     # RFC 6238 §4.1 default time step X
DIGITS: Final = 6    # RFC 4226 §5.3
DRIFT: Final = 1     # steps accepted either side (RFC 6238 §5.2)


def new_secret() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def code_at(secret: str, counter: int) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def verify(secret: str, code: str, now: float | None = None) -> bool:
    if not re.fullmatch(r"[0-9]{6}", code):
        return False
    counter = int((time.time() if now is None else now) // STEP)
    return any(hmac.compare_digest(code_at(secret, counter + d), code)
               for d in range(-DRIFT, DRIFT + 1))


def provisioning_uri(secret: str, username: str, issuer: str = "Postern") -> str:
    from urllib.parse import quote

    return (f"otpauth://totp/{quote(issuer)}:{quote(username)}?secret={secret}"
            f"&issuer={quote(issuer)}&digits={DIGITS}&period={STEP}")
