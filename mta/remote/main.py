"""remote — delivers mail to the rest of the world over SMTP.

NAME
    postern-remote (``python -m mta.remote --state DIR [--user USER]``)

SYNOPSIS
    python -m mta.remote --state var
    python -m mta.remote --state fhs --user postern-remote

DESCRIPTION
    Listens on ``run/remote.sock`` for delivery jobs from ``send`` (docs/internals.md
    "local.sock / remote.sock"): one message (by queue id), its sender, and recipients for
    one destination. For each job it finds the destination (``smtproutes``, else MX records
    by RFC 5321 §5.1 and RFC 7505), connects to the addresses in order, speaks ESMTP with
    PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and opportunistic STARTTLS (``tlspolicy``), and
    answers one K (delivered), Z (temporary) or D (permanent) frame per recipient whose text
    starts with the enhanced status code and carries the remote reply. Recipients of one
    message go in one transaction (100 per transaction); later messages to the same
    destination reuse the connection (up to 100 messages, 5 s idle). What leaves on the
    wire has CRLF line ends only and every line beginning with ``.`` doubled. A message
    marked BODY=8BITMIME goes to a server without 8BITMIME as it is (qmail's and Postfix's
    choice; no conversion); one whose envelope needs SMTPUTF8 fails permanently (5.6.7)
    at a server without it.

SECURITY
    Runs as ``postern-remote`` (``--user``, dropped right after binding the socket) or as
    the invoking user. Reads control/ and queue/mess (read-only, by validated id); writes
    nothing on disk. Talks to untrusted SMTP and DNS servers: every reply is parsed with
    limits (512-octet lines, 100 lines, ``timeoutremote`` per read and write). The
    ``relayauth`` password file must be readable by this user only; a password is sent only
    inside TLS.

CONTROL FILES
    smtproutes          qmail's routes (domain:relay[:port], .suffix, :default); default MX.
    relayauth           HOST[:PORT] USER PASSWORD for smarthosts that need AUTH; refused
                        (not used) while other users may read it.
    tlspolicy           domain:none|may|encrypt|verify; default may.
    dnsservers          IP[:PORT] per line; default the system resolver.
    helohost            name in EHLO/HELO; default ``me``, else the host's FQDN.
    me                  this host's name (an MX with this name is this host).
    outgoingip          source address(es) for connections; default the kernel's choice.
    timeoutconnect      seconds to connect (default 60).
    timeoutremote       seconds per read or write (default 1200).
    concurrencyremote   simultaneous deliveries in all (default 20, up to 1000).
    concurrencydestination  simultaneous deliveries to one destination (default 20).
    All are reloaded on change; a file that does not parse leaves the previous value.

EXIT STATUS
    0 after SIGTERM/SIGINT (pooled connections get QUIT); 111 when the socket cannot be
    bound.

SEE ALSO
    mta/remote/delivery.py, mta/remote/session.py, mta/remote/mx.py, mta/remote/routes.py,
    mta/smtp/client.py, docs/control.md, qmail-remote(8), RFC 5321, RFC 3207, RFC 7505.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Final

from mta.common import daemon
from mta.remote.delivery import Deliverer, RemoteConfig
from mta.remote.server import RemoteServer, bind

log = logging.getLogger("postern.remote")
EXIT_FAILURE: Final = 111
SHUTDOWN_GRACE: Final = 10.0  # seconds deliveries in progress get at SIGTERM


async def run(server: RemoteServer, sock: socket.socket) -> None:
    listener = await server.serve(sock)
    stop = daemon.stop_event()
    log.info("listening on %s", sock.getsockname())
    await stop.wait()
    log.info("stopping")
    listener.close()
    await server.deliverer.close()


def main(argv: list[str] | None = None) -> int:
    parser = daemon.base_parser("remote", "Delivers mail to other SMTP servers "
                                "(run/remote.sock).")
    parser.add_argument("--cafile", help=argparse_hidden())
    args = parser.parse_args(argv)
    state = daemon.setup("remote", args)
    os.umask(0o027)
    try:
        state.run.mkdir(parents=True, exist_ok=True)
        sock = bind(state.remote_socket)
    except (OSError, RuntimeError) as exc:
        log.critical("cannot bind %s: %s", state.remote_socket, exc)
        return EXIT_FAILURE
    if args.user:
        from mta.util.privs import drop_privileges
        drop_privileges(args.user)
    config = RemoteConfig(state, cafile=args.cafile)
    server = RemoteServer(state, Deliverer(config))
    try:
        daemon.run(run(server, sock))
    except KeyboardInterrupt:
        pass
    return 0


def argparse_hidden() -> str:
    import argparse
    return argparse.SUPPRESS
