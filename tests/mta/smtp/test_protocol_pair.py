"""Both roles back to back, in memory: REMOTE's ClientProtocol/DataEncoder talking to the
server machine through the session helper. What the client's encoder sends, the server
unstuffs to the same text, for any message and any chunking (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mta.smtp.client import ClientProtocol, DataEncoder
from tests.mta.smtp.helpers import Session


def converse(message_chunks: list[bytes], step: int) -> tuple[Session, list[int]]:
    server, client = Session(), ClientProtocol()
    client.receive_data(server.greet())
    codes: list[int] = []

    def pump(data: bytes) -> None:
        for i in range(0, len(data), step):
            client.receive_data(server.feed(data[i:i + step]))
        while (pair := client.next_reply()) is not None:
            codes.append(pair[1].code)

    pump(client.ehlo("client.test"))
    pump(client.mail("a@sender.test") + client.rcpt("b@rcpt.test") + client.data())
    encoder = DataEncoder()
    wire = b"".join(encoder.encode(chunk) for chunk in message_chunks) + encoder.finish()
    client.end_of_data()
    pump(wire)
    pump(client.quit())
    return server, codes


def canonical(message: bytes) -> bytes:
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


_text = st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"")) | st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"x", b".\r\n", b"\r\n.\r\n"]),
    max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_text, max_size=6), st.integers(min_value=1, max_value=40))
def test_client_encoder_and_server_agree(chunks: list[bytes], step: int) -> None:
    text = canonical(b"".join(chunks))
    assume(all(len(line) <= 998 for line in text.split(b"\r\n")))  # RFC 5321 4.5.3.1.6
    server, codes = converse(chunks, step)
    assert codes == [220, 250, 250, 250, 354, 250, 221]
    assert server.messages == [text]
