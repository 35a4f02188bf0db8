"""The process map: every daemon, every socket, every message type, who may send what.

Like OpenSMTPD's ``smtpd.h``, this file indexes the system. Each daemon is one OS process
with one job and (run as root) its own user. They talk over UNIX sockets in ``run/`` using
the frames of ``frames.py``; each protocol below lists the frame types each side may send
and the largest payload of each, so a decoder refuses anything else before reading it.
``docs/internals.md`` describes the conversations in prose.

Bump ``PROTOCOL_VERSION`` when any conversation changes shape.
"""

from __future__ import annotations

import enum
from typing import Final

PROTOCOL_VERSION: Final = 1


class Daemon(enum.StrEnum):
    """Every long-lived process, by the name of its package under ``mta/`` (or the web side)."""

    SMTPD = "smtpd"    # ESMTP on 25 and submission on 587; streams mail to QUEUE
    QUEUE = "queue"    # the only writer of new messages; owns run/queue.sock
    SEND = "send"      # scheduler; hands deliveries to LOCAL and REMOTE; serves run/status.sock
    LOCAL = "local"    # Maildir delivery; owns run/local.sock
    REMOTE = "remote"  # SMTP client; owns run/remote.sock
    CLEAN = "clean"    # removes finished messages when SEND asks; owns run/clean.sock
    WEB = "web"        # gunicorn + Django; reads run/status.sock
    WORKER = "worker"  # celery; writes control/


# System users when run as root (DESIGN.md "Processes").
DAEMON_USERS: Final[dict[Daemon, str]] = {
    Daemon.SMTPD: "postern-smtpd",
    Daemon.QUEUE: "postern-queue",
    Daemon.SEND: "postern-send",
    Daemon.LOCAL: "postern-vmail",
    Daemon.REMOTE: "postern-remote",
    Daemon.CLEAN: "postern-queue",
    Daemon.WEB: "postern-web",
    Daemon.WORKER: "postern-admin",
}

# Socket file names under run/, and which daemon listens on each.
QUEUE_SOCKET: Final = "queue.sock"
STATUS_SOCKET: Final = "status.sock"
LOCAL_SOCKET: Final = "local.sock"
REMOTE_SOCKET: Final = "remote.sock"
CLEAN_SOCKET: Final = "clean.sock"
TRIGGER_FIFO: Final = "trigger"  # QUEUE writes "<id>\n" after each commit; SEND reads

# Who may connect to whom. Anything else is a bug or an attack.
PEERS: Final[dict[str, tuple[Daemon, frozenset[str]]]] = {
    QUEUE_SOCKET: (Daemon.QUEUE, frozenset({"smtpd", "send", "any local user (sendmail)"})),
    STATUS_SOCKET: (Daemon.SEND, frozenset({"web", "postern queue"})),
    LOCAL_SOCKET: (Daemon.LOCAL, frozenset({"send"})),
    REMOTE_SOCKET: (Daemon.REMOTE, frozenset({"send"})),
    CLEAN_SOCKET: (Daemon.CLEAN, frozenset({"send"})),
}

# --- shared limits ---------------------------------------------------------------------

MAX_ADDRESS: Final = 900          # bytes in one envelope address (issue "Foundation")
MAX_RECIPIENTS: Final = 10_000    # per queued message; smtpd's own maxrcpt is far lower
MAX_CHUNK: Final = 65_536         # bytes of message data in one frame
MAX_TEXT: Final = 4_096           # bytes of a human-readable reply/error text
MAX_QUEUE_ID: Final = 64          # bytes of a queue id
MAX_JSON: Final = 4 * 1024 * 1024  # bytes of one status.sock request or answer


# --- queue.sock: injection (client -> QUEUE) --------------------------------------------
#   client: HELLO, SENDER, RECIPIENT+, PARAM*, DATA*, END
#   queue:  OK(queue id) | TEMPFAIL(text) | PERMFAIL(text), then closes
# Closing the connection before END abandons the message; nothing is kept.

class Q(bytes, enum.Enum):
    HELLO = b"V"      # b"postern-queue 1 origin=network|local|bounce"
    SENDER = b"F"     # envelope sender, b"" for the null sender <>
    RECIPIENT = b"T"  # one envelope recipient
    PARAM = b"P"      # b"NAME=value": SMTPUTF8, BODY=8BITMIME, AUTH=<user>, ENVID=..., RET=...
    DATA = b"M"       # a chunk of the message, CRLF line ends, not dot-stuffed
    END = b"E"        # commit; payload empty
    OK = b"K"         # committed; payload = queue id
    TEMPFAIL = b"Z"   # not queued, try again later; payload = text
    PERMFAIL = b"D"   # not queued, do not retry; payload = text


QUEUE_CLIENT_FRAMES: Final = {
    Q.HELLO.value: 128,
    Q.SENDER.value: MAX_ADDRESS,
    Q.RECIPIENT.value: MAX_ADDRESS,
    Q.PARAM.value: 1_024,
    Q.DATA.value: MAX_CHUNK,
    Q.END.value: 0,
}
QUEUE_SERVER_FRAMES: Final = {
    Q.OK.value: MAX_QUEUE_ID,
    Q.TEMPFAIL.value: MAX_TEXT,
    Q.PERMFAIL.value: MAX_TEXT,
}


# --- status.sock: the read-only queue window (web, CLI -> SEND) -------------------------
#   client: REQUEST(json {"verb": "summary"|"list"|"message", ...})
#   send:   ANSWER(json) | ERROR(text); unknown verbs get ERROR, bad frames a close.

class S(bytes, enum.Enum):
    REQUEST = b"Q"
    ANSWER = b"R"
    ERROR = b"X"


STATUS_CLIENT_FRAMES: Final = {S.REQUEST.value: 16_384}
STATUS_SERVER_FRAMES: Final = {S.ANSWER.value: MAX_JSON, S.ERROR.value: MAX_TEXT}


# --- local.sock / remote.sock: one delivery job at a time per connection (SEND -> worker) --
#   send:   JOB(queue id), SENDER, RECIPIENT+, GO
#   worker: one result per recipient, in order: DELIVERED | TEMPFAIL | PERMFAIL (text),
#           then the connection is ready for the next job.

class J(bytes, enum.Enum):
    JOB = b"J"
    SENDER = b"F"
    RECIPIENT = b"T"
    PARAM = b"P"
    GO = b"G"
    DELIVERED = b"K"
    TEMPFAIL = b"Z"
    PERMFAIL = b"D"


DELIVERY_CLIENT_FRAMES: Final = {
    J.JOB.value: MAX_QUEUE_ID,
    J.SENDER.value: MAX_ADDRESS,
    J.RECIPIENT.value: MAX_ADDRESS,
    J.PARAM.value: 1_024,
    J.GO.value: 0,
}
DELIVERY_SERVER_FRAMES: Final = {
    J.DELIVERED.value: MAX_TEXT,
    J.TEMPFAIL.value: MAX_TEXT,
    J.PERMFAIL.value: MAX_TEXT,
}


# --- clean.sock: removal of finished messages (SEND -> CLEAN) ---------------------------

class C(bytes, enum.Enum):
    REMOVE = b"X"  # payload = queue id
    DONE = b"K"
    FAILED = b"Z"  # payload = text


CLEAN_CLIENT_FRAMES: Final = {C.REMOVE.value: MAX_QUEUE_ID}
CLEAN_SERVER_FRAMES: Final = {C.DONE.value: 0, C.FAILED.value: MAX_TEXT}
