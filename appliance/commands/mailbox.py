"""``postern mailbox add ADDRESS [--quota SIZE] --password-stdin | list [DOMAIN] |
remove ADDRESS | passwd ADDRESS --password-stdin``.

The password is read from stdin (never argv, which other users can see in ps) and hashed
with mta.common.passwd. Writes the database and publishes before returning.
"""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("mailbox", help="mailboxes")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a mailbox")
    add.add_argument("address")
    add.add_argument("--quota", default="", help="e.g. 500M, 2G (default: unlimited)")
    add.add_argument("--name", default="")
    add.add_argument("--disabled", action="store_true")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=w.run(_add))
    ls = sub.add_parser("list", help="list mailboxes")
    ls.add_argument("domain", nargs="?")
    ls.set_defaults(func=w.run(_list))
    rm = sub.add_parser("remove", help="remove a mailbox (its Maildir stays on disk)")
    rm.add_argument("address")
    rm.set_defaults(func=w.run(_remove))
    pw = sub.add_parser("passwd", help="set a mailbox's password")
    pw.add_argument("address")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(func=w.run(_passwd))


def split(address: str):  # type: ignore[no-untyped-def]
    from django.core.exceptions import ValidationError

    from webui.core.validators import parse_address
    from webui.domains.models import Domain

    try:
        addr = parse_address(address)
    except ValidationError as exc:
        raise w.CommandError(f"{address}: {exc.messages[0]}", w.EX_DATAERR) from exc
    domain = Domain.objects.filter(name=addr.domain).first()
    if domain is None:
        raise w.CommandError(f"{addr.domain} is not a hosted domain (postern domain add "
                             f"{addr.domain})", w.EX_NOUSER)
    return domain, addr.local


def find(address: str):  # type: ignore[no-untyped-def]
    from webui.mailboxes.models import Mailbox

    domain, local = split(address)
    box = Mailbox.objects.filter(domain=domain, local_part__iexact=local).first()
    if box is None:
        raise w.CommandError(f"no mailbox {address}", w.EX_NOUSER)
    return box


def _add(args: argparse.Namespace) -> int:
    from webui.mailboxes.forms import MailboxForm

    domain, local = split(args.address)
    password = w.read_password(args)
    form = MailboxForm(data={"local_part": local, "domain": domain.pk, "password": password,
                             "quota": args.quota, "name": args.name,
                             "enabled": not args.disabled}, user=w.superuser())
    w.save_form(form, "create")
    return 0


def _list(args: argparse.Namespace) -> int:
    from webui.core.validators import format_size
    from webui.mailboxes.models import Mailbox

    qs = Mailbox.objects.select_related("domain")
    if args.domain:
        qs = qs.filter(domain__name=args.domain.lower())
    for m in qs:
        quota = format_size(m.quota) or "unlimited"
        print(f"{m.address}\t{quota}\t{'enabled' if m.enabled else 'disabled'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    w.delete(find(args.address))
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from webui.core import changes
    from webui.core.validators import format_size
    from webui.mailboxes.forms import MailboxForm

    box = find(args.address)
    password = w.read_password(args)
    before = changes.snapshot(box)
    form = MailboxForm(data={"local_part": box.local_part, "domain": box.domain.pk,
                             "password": password, "quota": format_size(box.quota),
                             "name": box.name, "enabled": box.enabled},
                       instance=box, user=w.superuser())
    w.save_form(form, "update", before)
    return 0
