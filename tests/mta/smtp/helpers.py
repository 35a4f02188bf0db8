"""A minimal policy around ServerProtocol: accepts everything, records messages.

Used to drive the state machine in memory (``Session.feed``) and behind a real socket for
the smtplib interop test. The real policy lives in mta/smtpd; this one only answers.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass, field

from mta.smtp import replies as R
from mta.smtp.events import (
    NEED_DATA, Auth, AuthResponse, BadCommand, Data, DataChunk, Ehlo, EndOfData, Event, Helo,
    Help, MailFrom, Noop, Quit, RcptTo, Rset, StartTls, Vrfy,
)
from mta.smtp.protocol import ServerProtocol, State
from mta.smtp.replies import Reply

EHLO_KEYWORDS = ["PIPELINING", "SIZE 1000000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]


@dataclass
class Session:
    proto: ServerProtocol = field(default_factory=ServerProtocol)
    events: list[Event] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    refused: list[Reply] = field(default_factory=list)
    _current: bytearray = field(default_factory=bytearray)

    def greet(self) -> bytes:
        return self.proto.greet(R.greeting("mx.test"))

    def answer(self, event: Event) -> Reply | None:
        if isinstance(event, BadCommand):
            return event.reply
        if isinstance(event, DataChunk):
            self._current += event.data
            return None
        if isinstance(event, EndOfData):
            body, self._current = bytes(self._current), bytearray()
            if event.refusal is not None:
                self.refused.append(event.refusal)
                return event.refusal
            self.messages.append(body)
            return R.QUEUED.with_text(f"ok queued as {len(self.messages)}")
        if isinstance(event, Ehlo):
            return R.ehlo_reply("mx.test", EHLO_KEYWORDS)
        if isinstance(event, Helo):
            return R.reply(250, None, "mx.test")
        table: dict[type[Event], Reply] = {
            MailFrom: R.SENDER_OK, RcptTo: R.RECIPIENT_OK, Data: R.START_DATA, Rset: R.RESET,
            Noop: R.NOOP_OK, Quit: R.BYE, Vrfy: R.VRFY_CANNOT, Help: R.HELP,
            StartTls: R.TLS_UNAVAILABLE, Auth: R.AUTH_FAILED, AuthResponse: R.AUTH_FAILED,
        }
        return table[type(event)]

    def feed(self, data: bytes) -> bytes:
        """Give bytes to the protocol; return every reply written."""
        self.proto.receive_data(data)
        out = bytearray()
        while True:
            event = self.proto.next_event()
            if event is NEED_DATA:
                return bytes(out)
            assert not isinstance(event, type(NEED_DATA))
            self.events.append(event)
            reply = self.answer(event)
            if reply is None:
                continue
            if isinstance(event, BadCommand):
                out += reply.encode()
            else:
                out += self.proto.send(reply)
            if self.proto.state is State.CLOSED:
                return bytes(out)


def serve_one_thread() -> tuple[socketserver.TCPServer, list[Session]]:
    """A threaded TCP server on 127.0.0.1:0 speaking through Session; returns it running."""
    sessions: list[Session] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            session = Session()
            sessions.append(session)
            sock: socket.socket = self.request
            sock.sendall(session.greet())
            while session.proto.state is not State.CLOSED:
                data = sock.recv(65536)
                if not data:
                    return
                out = session.feed(data)
                if out:
                    sock.sendall(out)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, sessions
