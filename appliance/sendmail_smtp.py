"""``sendmail -bs``: one SMTP session on stdin/stdout, for programs that speak SMTP to sendmail.

Called by appliance/sendmail.py. The grammar, command order and limits are those of the
server protocol machine (mta/smtp/protocol.py, sans I/O, shared with smtpd); this file only
moves bytes between the pipes and the machine and answers its events. Like qmail's
``sendmail -bs`` it needs no authentication and no relay rules: the caller is a local user who
could run ``sendmail`` directly, and the queue records its uid. Each accepted message goes to
the queue daemon over ``run/queue.sock`` (origin=local) and its queue id is in the 250 reply.

Untrusted input: every byte on stdin, handled by the protocol machine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO, Final

from mta.common.paths import StateDir
from mta.smtp import replies as R
from mta.smtp.events import (
    NEED_DATA, BadCommand, Data, DataChunk, Ehlo, EndOfData, Helo, Help, MailFrom, Noop, Quit,
    RcptTo, Rset, Vrfy,
)
from mta.smtp.protocol import ServerProtocol, State

if TYPE_CHECKING:
    from mta.queue.client import Injection

READ_SIZE: Final = 65536
EHLO_KEYWORDS: Final = ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES")


class _Session:
    def __init__(self, state: StateDir, out: BinaryIO) -> None:
        self.state = state
        self.out = out
        self.sender: bytes | None = None
        self.params: list[bytes] = []
        self.recipients: list[bytes] = []
        self.injection: Injection | None = None
        self.failed: R.Reply | None = None
        self.hostname = _me(state)

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def reset(self) -> None:
        if self.injection is not None:
            self.injection.abort()
        self.sender, self.params, self.recipients = None, [], []
        self.injection, self.failed = None, None

    def start_data(self) -> R.Reply:
        from mta.queue.client import Injection, QueueError
        self.injection = Injection(str(self.state.queue_socket), origin="local")
        try:
            assert self.sender is not None
            self.injection.begin(self.sender, self.recipients, self.params)
        except QueueError as exc:
            self.injection = None
            return _queue_reply(exc)
        return R.START_DATA

    def chunk(self, data: bytes) -> None:
        from mta.queue.client import QueueError
        if self.injection is None or self.failed is not None:
            return
        try:
            self.injection.write(data)
        except QueueError as exc:
            self.failed = _queue_reply(exc)
            self.injection.abort()

    def end(self, event: EndOfData) -> R.Reply:
        from mta.queue.client import QueueError
        injection, self.injection = self.injection, None
        try:
            if event.refusal is not None:
                return event.refusal
            if self.failed is not None:
                return self.failed
            if injection is None:
                return R.LOCAL_ERROR
            try:
                queue_id = injection.commit()
            except QueueError as exc:
                return _queue_reply(exc)
            return R.QUEUED.with_text(f"ok queued as {queue_id}")
        finally:
            if injection is not None and self.failed is not None:
                injection.abort()
            self.sender, self.params, self.recipients, self.failed = None, [], [], None


def _queue_reply(exc: Exception) -> R.Reply:
    from mta.queue.client import QueuePermanentError
    text = getattr(exc, "text", str(exc))
    if isinstance(exc, QueuePermanentError):
        return R.reply(554, "5.3.0", f"queue refused the message: {text}")
    return R.QUEUE_TEMPFAIL


def _me(state: StateDir) -> str:
    try:
        return state.control_file("me").read_text().split("\n")[0].strip() or "localhost"
    except OSError:
        return "localhost"


def serve(state: StateDir, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Run one SMTP session until QUIT or end of input; returns the exit status (0)."""
    machine = ServerProtocol(starttls=False, auth_mechanisms=())
    session = _Session(state, stdout)
    session.write(machine.greet(R.greeting(session.hostname, "ESMTP Postern sendmail -bs")))
    fd = stdin.fileno()
    eof = False
    while machine.state is not State.CLOSED:
        event = machine.next_event()
        if event is NEED_DATA:
            if eof:
                break
            data = os.read(fd, READ_SIZE)
            if not data:
                eof = True
            machine.receive_data(data)
            continue
        match event:
            case BadCommand(reply=reply):
                session.write(reply.encode())
            case DataChunk(data=data):
                session.chunk(data)
            case Ehlo():
                session.reset()
                session.write(machine.send(R.ehlo_reply(session.hostname, EHLO_KEYWORDS)))
            case Helo():
                session.reset()
                session.write(machine.send(R.reply(250, None, session.hostname)))
            case MailFrom(sender=sender, params=params):
                session.reset()
                session.sender = str(sender).encode() if sender is not None else b""
                if params.get("BODY") == "8BITMIME":
                    session.params.append(b"BODY=8BITMIME")
                if "SMTPUTF8" in params:
                    session.params.append(b"SMTPUTF8")
                session.write(machine.send(R.SENDER_OK))
            case RcptTo(recipient=recipient):
                address = f"postmaster@{session.hostname}" if recipient is None \
                    else str(recipient)
                session.recipients.append(address.encode())
                session.write(machine.send(R.RECIPIENT_OK))
            case Data():
                session.write(machine.send(session.start_data()))
            case EndOfData():
                session.write(machine.send(session.end(event)))
            case Rset():
                session.reset()
                session.write(machine.send(R.RESET))
            case Noop():
                session.write(machine.send(R.NOOP_OK))
            case Vrfy():
                session.write(machine.send(R.VRFY_CANNOT))
            case Help():
                session.write(machine.send(R.HELP))
            case Quit():
                session.write(machine.send(R.BYE))
            case _:
                session.write(machine.send(R.NOT_IMPLEMENTED))
    session.reset()
    return 0
