"""Routing: a committed envelope becomes per-recipient delivery state (queue/info).

Called by ``send``'s scheduler when it preprocesses a ``todo`` entry. Each envelope
recipient is parsed with our RFC 5321 grammar and resolved through the address book
(aliases, extension addresses, domain aliases, virtual domains, catch-alls) into final
deliveries: a local mailbox (route ``local``) or a remote address (route ``remote``). An
address with nowhere to go, or an alias loop, becomes a failed recipient at once (5.1.1 /
5.4.6) so its bounce does not wait. The same final address reached twice (two aliases
both listing it) is delivered once.

Untrusted: the envelope (decoded strictly by ``mta.common.envelope`` before we see it).
"""

from __future__ import annotations

from mta.common.address import AddressError, parse_mailbox
from mta.common.addressbook import AddressBook, AliasLoop, NoSuchAddress
from mta.common.envelope import Envelope
from mta.send.info import MessageInfo, Rcpt

# Parameters meant for us, not for the next hop (never handed to local/remote).
INTERNAL_PARAMS = ("BOUNCE=",)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def route_envelope(queue_id: str, env: Envelope, size: int, book: AddressBook) -> MessageInfo:
    """Build the initial delivery state; every pending recipient is due at once."""
    info = MessageInfo(id=queue_id, birth=env.birth, sender=_text(env.sender), origin=env.origin,
                       size=size, params=[_text(p) for p in env.params])
    seen: set[tuple[str, str]] = set()
    for raw in env.recipients:
        orcpt = _text(raw)
        try:
            address = parse_mailbox(raw, smtputf8=env.smtputf8)
            deliveries = book.resolve(address)
        except AddressError as exc:
            info.rcpts.append(Rcpt(orcpt, orcpt, "remote", "failed",
                                   last=f"5.1.3 <{orcpt}>: bad address: {exc}"))
            continue
        except (NoSuchAddress, AliasLoop) as exc:
            code = "5.4.6" if isinstance(exc, AliasLoop) else ""
            text = f"{code} {exc}".strip() if code else str(exc)
            info.rcpts.append(Rcpt(orcpt, orcpt, "local", "failed", last=text))
            continue
        for d in deliveries:
            route = "local" if d.kind == "mailbox" else "remote"
            key = (d.address.lower() if route == "local" else d.address, route)
            if d.kind == "failed":
                info.rcpts.append(Rcpt(orcpt, d.address, "local", "failed", last=d.text))
                continue
            if key in seen:
                continue
            seen.add(key)
            info.rcpts.append(Rcpt(orcpt, d.address, route))
    return info


def job_params(info: MessageInfo) -> list[bytes]:
    """The envelope parameters a delivery worker gets (ours removed)."""
    return [p.encode() for p in info.params if not p.startswith(INTERNAL_PARAMS)]
