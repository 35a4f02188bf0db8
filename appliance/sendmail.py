"""``sendmail``: the local injection front end every Unix program expects at /usr/sbin/sendmail.

NAME
    sendmail, postern sendmail — queue a message handed over on standard input.

SYNOPSIS
    sendmail [-t] [-i|-oi] [-f sender] [-F fullname] [-bm|-bs] [no-op flags] [--] [recipient...]

DESCRIPTION
    Reads a message on stdin, completes its header as qmail-inject does (appliance/headers.py:
    Bcc, Return-Path and Content-Length removed; Date, Message-ID, From added when missing)
    and streams it to the queue daemon over ``run/queue.sock`` (mta/queue/client.py,
    origin=local; the queue records our uid from the socket and adds the Received line).
    Recipients come from the arguments, and with ``-t`` also from To, Cc and Bcc. Without
    ``-i`` a line holding a single dot ends the message, as in sendmail. ``-bs`` speaks SMTP on
    stdin/stdout through the server protocol machine of mta/smtp/protocol.py.

    Accepted and ignored, as sendmail and Postfix accept them: -v (prints the queue id on
    stderr), -U, -m, -n, -x, -e?, -o<opt> (-oem, -odb, -odi, -oX...; -oi means -i),
    -B type (8BITMIME is passed to the queue as BODY=8BITMIME), -N dsn, -R ret, -V envid,
    -X file, -L tag, -O opt, -h hops, -C file, -E, -J. ``--state DIR`` chooses the state
    directory (default $POSTERN_STATE, else /etc/postern when installed, else ./var).

EXIT STATUS (sysexits.h)
    0 queued; 64 (EX_USAGE) bad option or no recipient; 65 (EX_DATAERR) malformed header,
    address or a message the queue refuses for good; 74 (EX_IOERR) stdin unreadable;
    75 (EX_TEMPFAIL) the queue cannot take it now (not running, disk full): try again.
    Every failure prints one line on stderr beginning ``sendmail:``.

SECURITY
    Runs as whichever local user calls it, with no privileges of its own. Everything it reads
    (arguments, environment, stdin) comes from that user; the queue daemon validates the
    envelope again and records the real uid. Control files are read, never written.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from appliance import headers
from mta.common.address import Address, AddressError
from mta.common.control import ControlError, parse_single
from mta.common.paths import STATE_ENV, StateDir

EX_OK: Final = 0
EX_USAGE: Final = 64
EX_DATAERR: Final = 65
EX_IOERR: Final = 74
EX_TEMPFAIL: Final = 75

CHUNK: Final = 65536          # bytes read from stdin at a time (ipc.MAX_CHUNK)
QUEUE_TIMEOUT: Final = 300.0  # seconds for the queue to answer, as the queue client's default
INSTALLED_CONTROL: Final = Path("/etc/postern/control")

# Flags that take a value (-fADDR or -f ADDR); all ignored ones included so their value is
# not mistaken for a recipient.
VALUE_FLAGS: Final = frozenset("fFrBNRVXLOhCEJbo")
SWITCHES: Final = frozenset("tivUmnxG")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class UsageError(Exception):
    """Bad command line; exit 64."""


@dataclass
class Options:
    extract: bool = False             # -t
    dot_ends: bool = True             # no -i
    mode: str = "m"                   # -bm (deliver) or -bs (SMTP)
    sender: str | None = None         # -f / -r
    full_name: str | None = None      # -F
    body_type: str | None = None      # -B
    verbose: bool = False             # -v
    state: str | None = None          # --state
    recipients: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Options:
    """sendmail's getopt-style command line (grouped switches, -fADDR or -f ADDR)."""
    opts = Options()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg == "--state" or arg.startswith("--state="):
            if "=" in arg:
                opts.state = arg.split("=", 1)[1]
            elif i < len(args):
                opts.state, i = args[i], i + 1
            else:
                raise UsageError("--state needs a directory")
            continue
        if arg.startswith("--") or not arg.startswith("-") or arg == "-":
            i -= 1
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            j += 1
            if letter in SWITCHES:
                if letter == "t":
                    opts.extract = True
                elif letter == "i":
                    opts.dot_ends = False
                elif letter == "v":
                    opts.verbose = True
                continue
            if letter not in VALUE_FLAGS and letter not in "e":
                raise UsageError(f"unknown option -{letter}")
            if letter == "e":  # -em, -ep, ...: error reporting mode, ignored
                break
            value = arg[j:]
            if not value:
                if i >= len(args):
                    raise UsageError(f"option -{letter} needs a value")
                value, i = args[i], i + 1
            apply_value(opts, letter, value)
            break
    opts.recipients.extend(args[i:])
    return opts


def apply_value(opts: Options, letter: str, value: str) -> None:
    if letter in "fr":
        opts.sender = value
    elif letter == "F":
        if _CONTROL_CHARS.search(value):
            raise UsageError("-F: control characters in the full name")
        opts.full_name = value
    elif letter == "B":
        opts.body_type = value.upper()
    elif letter == "o":
        if value == "i":
            opts.dot_ends = False
    elif letter == "b":
        if value in ("m", "s"):
            opts.mode = value
        elif value == "p":
            raise UsageError("-bp: use 'postern queue' to list the queue")
        elif value == "i":
            raise UsageError("-bi: Postern has no aliases database to rebuild "
                             "(aliases are managed in the web admin)")
        else:
            raise UsageError(f"-b{value} is not supported")
    # every other value flag is accepted and ignored (see the module docstring)


# --- configuration ------------------------------------------------------------------------

def state_dir(opts: Options) -> StateDir:
    if opts.state:
        return StateDir.from_arg(opts.state)
    if os.environ.get(STATE_ENV):
        return StateDir.from_arg(os.environ[STATE_ENV])
    if INSTALLED_CONTROL.is_dir():
        return StateDir.fhs()
    return StateDir.from_arg(None)


@dataclass(frozen=True)
class Names:
    """The host names qmail-inject takes from control files (defaults: ``me``)."""

    me: str
    defaulthost: str
    defaultdomain: str
    idhost: str


def read_control(state: StateDir, name: str) -> str | None:
    try:
        value = parse_single(state.control_file(name).read_bytes(), name=name)
    except FileNotFoundError:
        return None
    except (OSError, ControlError) as exc:
        print(f"sendmail: warning: control/{name} ignored: {exc}", file=sys.stderr)
        return None
    if value is None or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
        return None
    return value.lower()


def read_names(state: StateDir) -> Names:
    me = read_control(state, "me") or socket.getfqdn()
    return Names(me=me,
                 defaulthost=read_control(state, "defaulthost") or me,
                 defaultdomain=read_control(state, "defaultdomain") or me,
                 idhost=read_control(state, "idhost") or me)


def who_am_i(names: Names, full_name: str | None) -> headers.Identity:
    """The calling user (by uid, not by $USER) for the default sender and From."""
    try:
        entry = pwd.getpwuid(os.getuid())
        user, gecos = entry.pw_name, entry.pw_gecos.split(",")[0].strip()
    except KeyError:
        user, gecos = f"uid{os.getuid()}", ""
    if full_name is None:
        env_name = os.environ.get("MAILNAME") or os.environ.get("NAME")
        full_name = env_name if env_name and not _CONTROL_CHARS.search(env_name) else None
    return headers.Identity(user=user, host=names.defaulthost,
                            name=full_name or (gecos if gecos and not
                                               _CONTROL_CHARS.search(gecos) else None))


def envelope_sender(opts: Options, me: headers.Identity, names: Names) -> bytes:
    if opts.sender is None:
        return f"{me.user}@{me.host}".encode()
    raw = opts.sender.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    if raw == "":
        return b""
    try:
        return str(headers.complete_address(raw.encode("utf-8"), names.defaulthost,
                                            names.defaultdomain)).encode("utf-8")
    except headers.HeaderError as exc:
        raise DataError(f"-f: {exc}") from None


class DataError(Exception):
    """Bad input (header, address); exit 65."""


# --- reading the message --------------------------------------------------------------------

def read_header(stream: BinaryIO, dot_ends: bool) -> tuple[bytes, bytes, bool]:
    """Read the header block; return (header lines, first body bytes, input ended).

    The header ends at an empty line (consumed) or at the first line that is neither a
    field nor a continuation (kept as the start of the body). A leading mbox ``From `` line
    is dropped, as sendmail and Postfix do.
    """
    lines: list[bytes] = []
    size = 0
    first = True
    while True:
        line = stream.readline(headers.MAX_LINE + 1)
        if not line:
            return b"".join(lines), b"", True
        if not line.endswith(b"\n") and len(line) > headers.MAX_LINE:
            raise DataError(f"a header line is longer than {headers.MAX_LINE - 2} characters")
        if first and line.startswith(b"From "):
            first = False
            continue
        first = False
        if dot_ends and line.rstrip(b"\r\n") == b".":
            return b"".join(lines), b"", True
        if line in (b"\n", b"\r\n"):
            return b"".join(lines), b"", False
        is_continuation = line[:1] in (b" ", b"\t") and bool(lines)
        if not is_continuation and not headers._FIELD.match(line):
            return b"".join(lines), line, False
        lines.append(line)
        size += len(line)
        if size > headers.MAX_HEADER_BYTES:
            raise DataError(f"header block larger than {headers.MAX_HEADER_BYTES} bytes")


def read_body(stream: BinaryIO, dot_ends: bool) -> Iterator[bytes]:
    """The rest of stdin; without -i it stops at a line holding only a dot."""
    if not dot_ends:
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                return
            yield chunk
    at_line_start = True
    pending: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(CHUNK)
        if not line:
            break
        if at_line_start and line in (b".\n", b".\r\n", b"."):
            break
        at_line_start = line.endswith(b"\n")
        pending.append(line)
        size += len(line)
        if size >= CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


# --- injection --------------------------------------------------------------------------------

def unique_recipients(addresses: Sequence[Address]) -> list[bytes]:
    seen: set[bytes] = set()
    out: list[bytes] = []
    for address in addresses:
        raw = str(address).encode("utf-8")
        if raw not in seen:
            seen.add(raw)
            out.append(raw)
    return out


def submit(state: StateDir, opts: Options, stdin: BinaryIO) -> str:
    """Read, complete and queue one message; returns the queue id. Raises on failure."""
    names = read_names(state)
    me = who_am_i(names, opts.full_name)
    sender = envelope_sender(opts, me, names)
    argv_recipients: list[Address] = []
    for raw in opts.recipients:
        try:
            argv_recipients.append(headers.complete_address(
                raw.encode("utf-8", "surrogateescape"), names.defaulthost, names.defaultdomain))
        except headers.HeaderError as exc:
            raise UsageError(f"recipient {raw[:80]!r}: {exc}") from None
    if not opts.extract and not argv_recipients:
        raise UsageError("no recipients given (name them, or use -t)")
    try:
        block, body_start, ended = read_header(stdin, opts.dot_ends)
        prepared = headers.prepare(
            block, sender=me, defaulthost=names.defaulthost, defaultdomain=names.defaultdomain,
            idhost=names.idhost, unique=f"{os.getpid()}.{os.urandom(4).hex()}.postern")
    except headers.HeaderError as exc:
        raise DataError(str(exc)) from None
    recipients = unique_recipients(
        argv_recipients + (prepared.header_recipients if opts.extract else []))
    if not recipients:
        raise DataError("no recipient addresses found in the header (-t)")
    params = [b"BODY=8BITMIME"] if opts.body_type == "8BITMIME" else []

    from mta.queue.client import Injection
    with Injection(str(state.queue_socket), origin="local", timeout=QUEUE_TIMEOUT) as inj:
        inj.begin(sender, recipients, params)
        inj.write(prepared.header + b"\r\n" + body_start)
        if not ended:
            for chunk in read_body(stdin, opts.dot_ends):
                inj.write(chunk)
        return str(inj.commit())


def main(argv: Sequence[str] | None = None, *, state: str | None = None) -> int:
    """The ``sendmail`` entry point; ``postern sendmail`` calls it with its own ``--state``."""
    args = list(sys.argv[1:] if argv is None else argv)
    invoked = Path(sys.argv[0]).name if argv is None else "sendmail"
    if invoked == "mailq":
        return fail(EX_USAGE, "use 'postern queue' to list the queue")
    if invoked == "newaliases":
        return fail(EX_USAGE, "Postern has no aliases database (the web admin manages aliases)")
    try:
        opts = parse_args(args)
    except UsageError as exc:
        return fail(EX_USAGE, str(exc))
    if state and not opts.state:
        opts.state = state
    chosen = state_dir(opts)
    if opts.mode == "s":
        from appliance import sendmail_smtp
        return sendmail_smtp.serve(chosen, sys.stdin.buffer, sys.stdout.buffer)
    return inject_from_stdin(chosen, opts)


def inject_from_stdin(state: StateDir, opts: Options) -> int:
    from mta.queue.client import QueuePermanentError, QueueTemporaryError
    try:
        queue_id = submit(state, opts, sys.stdin.buffer)
    except UsageError as exc:
        return fail(EX_USAGE, str(exc))
    except DataError as exc:
        return fail(EX_DATAERR, str(exc))
    except QueuePermanentError as exc:
        return fail(EX_DATAERR, f"the queue refused the message: {exc.text}")
    except QueueTemporaryError as exc:
        return fail(EX_TEMPFAIL, f"the queue cannot take the message now: {exc.text}")
    except OSError as exc:
        return fail(EX_IOERR, f"cannot read the message: {exc}")
    except AddressError as exc:
        return fail(EX_DATAERR, str(exc))
    if opts.verbose:
        print(f"sendmail: queued as {queue_id}", file=sys.stderr)
    return EX_OK


def fail(status: int, text: str) -> int:
    print(f"sendmail: {text}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
