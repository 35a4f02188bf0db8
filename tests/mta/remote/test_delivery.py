"""Deliverer + Session against real SMTP servers on loopback that misbehave on purpose."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
from pathlib import Path

import pytest

from mta.common.paths import StateDir
from mta.common.results import Outcome, Result
from mta.remote.delivery import Deliverer, RemoteConfig
from mta.remote.routes import Relay
from mta.remote.tcpto import TcpTo
from tests import support
from tests.mta.remote.helpers import (Behaviour, SmtpTestServer, self_signed, server_tls,
                                      unstuff)

MESSAGE = b"Subject: test\r\n\r\nhello\r\n"


def setup_state(state: StateDir, routes: str, **controls: str) -> None:
    state.control.mkdir(parents=True, exist_ok=True)
    (state.control / "smtproutes").write_text(routes)
    (state.control / "helohost").write_text("client.postern.test\n")
    controls.setdefault("timeoutconnect", "2")
    controls.setdefault("timeoutremote", "5")
    for name, value in controls.items():
        (state.control / name).write_text(value + "\n")
        (state.control / name).chmod(0o600)


def message_file(tmp: Path, data: bytes = MESSAGE) -> io.BufferedReader:
    path = tmp / f"m{len(list(tmp.iterdir()))}"
    path.write_bytes(data)
    return open(path, "rb")


def deliver(deliverer: Deliverer, rcpts: list[str], msg: io.BufferedReader,
            sender: str = "a@postern.test", params: tuple[str, ...] = ()) -> list[Result]:
    async def go() -> list[Result]:
        try:
            return await deliverer.deliver(sender, rcpts, list(params), msg)
        finally:
            await deliverer.close()
    return asyncio.run(go())


def kinds(results: list[Result]) -> list[str]:
    return [r.outcome.value for r in results]


def test_several_recipients_in_one_transaction_with_per_recipient_replies(
        state: StateDir, tmp_path: Path) -> None:
    behaviour = Behaviour(rcpt_replies={b"temp@x.test": b"450 4.2.1 mailbox busy",
                                        b"gone@x.test": b"550-5.1.1 no such user\r\n"
                                                        b"550 5.1.1 really"})
    with SmtpTestServer(behaviour) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)),
                      ["ok1@x.test", "temp@x.test", "gone@x.test", "ok2@x.test"],
                      message_file(tmp_path))
    assert kinds(got) == ["delivered", "temporary", "permanent", "delivered"]
    assert got[2].enhanced == "5.1.1" and got[2].text.startswith("5.1.1 <gone@x.test>")
    assert "no such user | 550 5.1.1 really" in got[2].text  # the multi-line reply, kept
    assert got[1].enhanced == "4.2.1"
    assert len(server.transactions) == 1
    assert server.transactions[0].rcpts == [b"ok1@x.test", b"ok2@x.test"]
    assert server.transactions[0].mail == b"MAIL FROM:<a@postern.test> SIZE=24"
    assert server.helo == [b"EHLO client.postern.test"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_wire_is_crlf_only_and_dot_stuffed_whatever_was_stored(
        state: StateDir, tmp_path: Path, pipelining: bool) -> None:
    stored = (b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<evil@x>\r\n.\r\n"
              b"bare\rcr\r.\r..two\r\n.")
    ext = (b"PIPELINING", b"8BITMIME") if pipelining else (b"8BITMIME",)
    with SmtpTestServer(Behaviour(ehlo_lines=ext)) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"],
                      message_file(tmp_path, stored))
    assert kinds(got) == ["delivered"]
    [tx] = server.transactions
    wire = tx.data
    assert b"\r" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b"")
    assert unstuff(wire) == (b"Subject: smuggle\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@x>\r\n"
                             b".\r\nbare\r\ncr\r\n.\r\n..two\r\n.\r\n")
    assert b"\r\n.\r\n" not in b"\r\n" + wire  # nothing ended DATA early


def test_ehlo_refused_falls_back_to_helo(state: StateDir, tmp_path: Path) -> None:
    with SmtpTestServer(Behaviour(ehlo_reply=b"502 5.5.1 EHLO? never heard of it")) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["delivered"]
    assert server.helo == [b"EHLO client.postern.test", b"HELO client.postern.test"]
    assert server.transactions[0].mail == b"MAIL FROM:<a@postern.test>"  # no SIZE=: not ESMTP


def test_size_over_the_servers_limit_fails_before_mail(state: StateDir,
                                                        tmp_path: Path) -> None:
    with SmtpTestServer(Behaviour(ehlo_lines=(b"SIZE 10",))) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["permanent"] and got[0].enhanced == "5.3.4"
    assert server.transactions == []


def test_smtputf8_needed_but_not_offered_is_permanent(state: StateDir,
                                                      tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["jörg@x.test"], message_file(tmp_path))
    assert kinds(got) == ["permanent"] and got[0].enhanced == "5.6.7"
    assert "SMTPUTF8" in got[0].text


def test_smtputf8_and_8bitmime_are_used_when_offered(state: StateDir, tmp_path: Path) -> None:
    ext = (b"PIPELINING", b"8BITMIME", b"SMTPUTF8", b"SIZE 1000")
    with SmtpTestServer(Behaviour(ehlo_lines=ext)) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["jörg@x.test"],
                      message_file(tmp_path, "Subject: é\r\n\r\né\r\n".encode()),
                      params=("BODY=8BITMIME", "SMTPUTF8"))
    assert kinds(got) == ["delivered"]
    assert server.transactions[0].mail.endswith(b" BODY=8BITMIME SMTPUTF8")
    assert server.transactions[0].rcpts == ["jörg@x.test".encode()]


@pytest.mark.parametrize("behaviour,expected,enhanced", [
    (Behaviour(mail_reply=b"451 4.3.0 try later"), "temporary", "4.3.0"),
    (Behaviour(mail_reply=b"553 5.7.1 sender refused"), "permanent", "5.7.1"),
    (Behaviour(data_reply=b"554 5.6.0 no DATA for you"), "permanent", "5.6.0"),
    (Behaviour(final_reply=b"452 4.3.1 disk full"), "temporary", "4.3.1"),
    (Behaviour(final_reply=b"554 5.7.1 spam"), "permanent", "5.7.1"),
    (Behaviour(final_reply=b"250 queued"), "delivered", "2.0.0"),
    (Behaviour(close_in_data=True), "temporary", "4.4.2"),
    (Behaviour(close_after_dot=True), "temporary", "4.4.2"),
    (Behaviour(greeting=b"554 5.7.1 go away"), "temporary", "4.7.1"),
])
def test_reply_handling(state: StateDir, tmp_path: Path, behaviour: Behaviour, expected: str,
                        enhanced: str) -> None:
    with SmtpTestServer(behaviour) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["r1@x.test", "r2@x.test"],
                      message_file(tmp_path, MESSAGE * 2000))
    assert kinds(got) == [expected, expected]
    assert got[0].enhanced == enhanced, got[0].text
    if behaviour.close_after_dot:
        assert "possible duplicate" in got[0].text


def test_refused_connection_moves_to_the_next_address(state: StateDir,
                                                      tmp_path: Path) -> None:
    dead = support.free_port()
    with SmtpTestServer() as server:
        # smtproutes names one relay; give it two addresses by routing through a literal
        # list: first the dead port via a second route, then the live one.
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        deliverer = Deliverer(RemoteConfig(state))
        from mta.remote.mx import Target

        async def targets(relay):  # type: ignore[no-untyped-def]
            return [Target("dead", 0, "127.0.0.1", dead),
                    Target("live", 0, "127.0.0.1", server.port)]
        deliverer.resolver().relay_targets = targets  # type: ignore[method-assign]
        got = deliver(deliverer, ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["delivered"] and "live[127.0.0.1]" in got[0].text


def test_nothing_reachable_is_temporary(state: StateDir, tmp_path: Path) -> None:
    setup_state(state, f"x.test:127.0.0.1:{support.free_port()}\n")
    got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["temporary"] and got[0].enhanced.startswith("4.")
    assert "could not deliver" in got[0].text


def test_tarpit_times_out_and_defers(state: StateDir, tmp_path: Path) -> None:
    with SmtpTestServer(Behaviour(tarpit=True)) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n", timeoutremote="1")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["temporary"] and "timeout" in got[0].text


def _full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: further SYNs are dropped (connect times out)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(sock.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    return sock, fillers


def test_connect_timeouts_are_remembered_tcpto(state: StateDir, tmp_path: Path) -> None:
    listener, fillers = _full_listener()
    port = listener.getsockname()[1]
    now = [0.0]
    tcpto = TcpTo(clock=lambda: now[0])
    setup_state(state, f"x.test:127.0.0.1:{port}\n", timeoutconnect="1")
    try:
        for _ in range(2):
            got = deliver(Deliverer(RemoteConfig(state), tcpto=tcpto), ["r@x.test"],
                          message_file(tmp_path))
            assert kinds(got) == ["temporary"] and "timed out" in got[0].text
            now[0] += 200
        assert tcpto.skip("127.0.0.1")
        got = deliver(Deliverer(RemoteConfig(state), tcpto=tcpto), ["r@x.test"],
                      message_file(tmp_path))
        assert kinds(got) == ["temporary"] and "tcpto" in got[0].text
    finally:
        listener.close()
        for c in fillers:
            c.close()


def test_connection_is_reused_for_the_next_message(state: StateDir, tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        deliverer = Deliverer(RemoteConfig(state))

        async def go() -> list[list[Result]]:
            out = [await deliverer.deliver("a@postern.test", [f"r{i}@x.test"], [],
                                           message_file(tmp_path)) for i in range(5)]
            await deliverer.close()
            return out
        results = asyncio.run(go())
    assert all(kinds(r) == ["delivered"] for r in results)
    assert server.connections == 1 and len(server.transactions) == 5
    assert deliverer.connections_opened == 1


def test_reuse_is_bounded(state: StateDir, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mta.remote.delivery.MAX_MESSAGES_PER_CONNECTION", 2)
    with SmtpTestServer() as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        deliverer = Deliverer(RemoteConfig(state))

        async def go() -> None:
            for i in range(5):
                await deliverer.deliver("a@x", [f"r{i}@x.test"], [], message_file(tmp_path))
            await deliverer.close()
        asyncio.run(go())
    assert server.connections == 3 and len(server.transactions) == 5


def test_a_pooled_connection_the_server_closed_is_replaced(state: StateDir,
                                                           tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        deliverer = Deliverer(RemoteConfig(state))

        async def go() -> list[Result]:
            await deliverer.deliver("a@x", ["r1@x.test"], [], message_file(tmp_path))
            for c in list(server._conns):  # the server drops idle connections
                c.shutdown(socket.SHUT_RDWR)
            await asyncio.sleep(0.05)
            got = await deliverer.deliver("a@x", ["r2@x.test"], [], message_file(tmp_path))
            await deliverer.close()
            return got
        got = asyncio.run(go())
    assert kinds(got) == ["delivered"] and server.connections == 2


@pytest.mark.parametrize("limit_file", ["concurrencyremote", "concurrencydestination"])
def test_concurrency_limits(state: StateDir, tmp_path: Path, limit_file: str) -> None:
    with SmtpTestServer(Behaviour(delay=0.2)) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n", **{limit_file: "2"})
        deliverer = Deliverer(RemoteConfig(state))

        async def go() -> list[list[Result]]:
            out = await asyncio.gather(*[
                deliverer.deliver("a@x", [f"r{i}@x.test"], [], message_file(tmp_path))
                for i in range(6)])
            await deliverer.close()
            return list(out)
        results = asyncio.run(go())
    assert all(kinds(r) == ["delivered"] for r in results)
    assert server.max_active == 2 and len(server.transactions) == 6


def test_starttls_opportunistic_and_verify(state: StateDir, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with SmtpTestServer(Behaviour(tls_context=server_tls(cert, key))) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\ny.test:127.0.0.1:{server.port}\n",
                    tlspolicy="y.test:verify")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
        assert kinds(got) == ["delivered"] and server.transactions[-1].tls
        # verify against the system CA store: a self-signed certificate fails, temporarily
        got = deliver(Deliverer(RemoteConfig(state)), ["r@y.test"], message_file(tmp_path))
        assert kinds(got) == ["temporary"] and got[0].enhanced == "4.7.5"
        # verify against the right CA passes
        got = deliver(Deliverer(RemoteConfig(state, cafile=str(cert))), ["r@y.test"],
                      message_file(tmp_path))
        assert kinds(got) == ["delivered"] and server.transactions[-1].tls
        assert len(server.transactions) == 2


def test_encrypt_policy_refuses_plain_text(state: StateDir, tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        setup_state(state, f":127.0.0.1:{server.port}\n", tlspolicy="x.test:encrypt")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["temporary"] and got[0].enhanced == "4.7.4"
    assert server.transactions == []


def test_tlspolicy_none_never_starts_tls(state: StateDir, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with SmtpTestServer(Behaviour(tls_context=server_tls(cert, key))) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n", tlspolicy="x.test:none")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["delivered"] and not server.transactions[0].tls


def test_smarthost_auth_only_inside_tls(state: StateDir, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with SmtpTestServer(Behaviour(tls_context=server_tls(cert, key), auth=True)) as server:
        setup_state(state, f":127.0.0.1:{server.port}\n",
                    relayauth=f"127.0.0.1:{server.port} user@postern.test pass word")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
        assert kinds(got) == ["delivered"]
        tx = server.transactions[0]
        assert tx.tls and tx.auth == b"AUTH PLAIN " + base64.b64encode(
            b"\0user@postern.test\0pass word")
    with SmtpTestServer(Behaviour(auth=True)) as plain:
        setup_state(state, f":127.0.0.1:{plain.port}\n",
                    relayauth=f"127.0.0.1 user@postern.test pass word")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["temporary"] and plain.transactions == []
    assert "without TLS" in got[0].text


def test_more_than_100_recipients_are_split_into_transactions(state: StateDir,
                                                              tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        rcpts = [f"r{i}@x.test" for i in range(250)]
        got = deliver(Deliverer(RemoteConfig(state)), rcpts, message_file(tmp_path))
    assert kinds(got) == ["delivered"] * 250
    assert [len(t.rcpts) for t in server.transactions] == [100, 100, 50]
    assert server.connections == 1


def test_ipv6_relay_and_outgoingip(state: StateDir, tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")  # pragma: no cover
    with SmtpTestServer(host="::1") as v6, SmtpTestServer() as v4:
        setup_state(state, f"six.test:[::1]:{v6.port}\nfour.test:127.0.0.1:{v4.port}\n",
                    outgoingip="127.0.0.9\n::1")
        d = Deliverer(RemoteConfig(state))
        assert kinds(deliver(d, ["r@six.test"], message_file(tmp_path))) == ["delivered"]
        assert kinds(deliver(d, ["r@four.test"], message_file(tmp_path))) == ["delivered"]
    assert v6.peers == ["::1"] and len(v6.transactions) == 1
    assert v4.peers == ["127.0.0.9"]  # the configured source address


def test_a_world_readable_relayauth_is_refused(state: StateDir) -> None:
    setup_state(state, ":127.0.0.1:2525\n", relayauth="127.0.0.1 user secret")
    path = state.control / "relayauth"
    path.chmod(0o644)
    config = RemoteConfig(state)
    assert config.relayauth.get().lookup(Relay("127.0.0.1")) is None
    assert "other users" in (config.relayauth.error or "")
    path.chmod(0o640)
    os.utime(path, ns=(1, 1))  # the admin saves it again: ControlFile sees a new mtime
    creds = config.relayauth.reload().lookup(Relay("127.0.0.1"))
    assert creds is not None and creds.password == "secret"


def _two_targets(deliverer: Deliverer, first: int, second: int) -> None:
    """The relay resolves to two addresses (as an MX list would): first, then second."""
    from mta.remote.mx import Target

    async def targets(relay: Relay) -> list[Target]:
        return [Target("first", 0, "127.0.0.1", first), Target("second", 0, "127.0.0.1", second)]
    deliverer.resolver().relay_targets = targets  # type: ignore[method-assign]


def test_a_busy_greeting_moves_to_the_next_address(state: StateDir, tmp_path: Path) -> None:
    with SmtpTestServer(Behaviour(greeting=b"421 4.3.2 busy, try later")) as busy, \
            SmtpTestServer() as good:
        setup_state(state, f"x.test:127.0.0.1:{busy.port}\n")
        deliverer = Deliverer(RemoteConfig(state))
        _two_targets(deliverer, busy.port, good.port)
        got = deliver(deliverer, ["r@x.test"], message_file(tmp_path), sender="")
    assert kinds(got) == ["delivered"] and "second[127.0.0.1]" in got[0].text
    assert busy.connections == 1 and good.transactions[0].mail == b"MAIL FROM:<> SIZE=24"


def test_a_4xx_in_the_transaction_does_not_try_the_next_address(state: StateDir,
                                                                tmp_path: Path) -> None:
    # qmail's rule: once a server has answered MAIL, its answer stands.
    with SmtpTestServer(Behaviour(mail_reply=b"451 4.7.1 greylisted")) as grey, \
            SmtpTestServer() as other:
        setup_state(state, f"x.test:127.0.0.1:{grey.port}\n")
        deliverer = Deliverer(RemoteConfig(state))
        _two_targets(deliverer, grey.port, other.port)
        got = deliver(deliverer, ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == ["temporary"] and "greylisted" in got[0].text
    assert other.connections == 0


@pytest.mark.parametrize("policy,expected", [("may", "delivered"), ("encrypt", "temporary")])
def test_failed_tls_handshake(state: StateDir, tmp_path: Path, policy: str,
                              expected: str) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    context = server_tls(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED  # demands a client certificate we do not have
    context.load_verify_locations(cert)
    with SmtpTestServer(Behaviour(tls_context=context)) as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n", tlspolicy=f"x.test:{policy}")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path))
    assert kinds(got) == [expected]
    if policy == "may":  # tried again on the same host without STARTTLS
        assert server.connections == 2 and not server.transactions[0].tls
    else:
        assert got[0].enhanced == "4.7.5" and server.transactions == []


def test_pooled_sessions_are_not_shared_across_tls_policies(state: StateDir,
                                                            tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        setup_state(state, f":127.0.0.1:{server.port}\n", tlspolicy="b.test:none")
        deliverer = Deliverer(RemoteConfig(state))

        async def go() -> None:
            for rcpt in ("r@a.test", "r@b.test", "r@a.test"):
                await deliverer.deliver("s@x", [rcpt], [], message_file(tmp_path))
            assert deliverer.idle_count() == 2
            await deliverer.close()
        asyncio.run(go())
    assert server.connections == 2 and len(server.transactions) == 3


def test_a_large_message_is_streamed_whole(state: StateDir, tmp_path: Path) -> None:
    line = b"." + b"x" * 76 + b"\r\n"  # every line needs stuffing
    body = b"Subject: big\r\n\r\n" + line * 70_000  # about 5.4 MB
    with SmtpTestServer() as server:
        setup_state(state, f"x.test:127.0.0.1:{server.port}\n")
        got = deliver(Deliverer(RemoteConfig(state)), ["r@x.test"], message_file(tmp_path, body))
    assert kinds(got) == ["delivered"]
    assert unstuff(server.transactions[0].data) == body
    assert len(server.transactions[0].data) == len(body) + 70_000
