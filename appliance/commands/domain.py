"""``postern domain add NAME | list | remove NAME``: hosted domains (IDN accepted, stored as
A-labels), plus ``postern domain alias ALIAS TARGET`` for domain aliases.

Writes the database and publishes before returning (appliance/commands/_webui.py).
"""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("domain", help="hosted domains")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a domain")
    add.add_argument("name")
    add.add_argument("--description", default="")
    add.add_argument("--disabled", action="store_true")
    add.set_defaults(func=w.run(_add))
    ls = sub.add_parser("list", help="list domains")
    ls.set_defaults(func=w.run(_list))
    rm = sub.add_parser("remove", help="remove a domain with its mailboxes and aliases")
    rm.add_argument("name")
    rm.set_defaults(func=w.run(_remove))
    al = sub.add_parser("alias", help="make ALIAS a domain alias of TARGET")
    al.add_argument("alias")
    al.add_argument("target")
    al.set_defaults(func=w.run(_alias))


def _find(name: str):  # type: ignore[no-untyped-def]
    from webui.core.validators import normalise_domain
    from webui.domains.models import Domain

    domain = Domain.objects.filter(name=normalise_domain(name)).first()
    if domain is None:
        raise w.CommandError(f"no domain {name}", w.EX_NOUSER)
    return domain


def _add(args: argparse.Namespace) -> int:
    from webui.domains.forms import DomainForm

    form = DomainForm(data={"name": args.name, "description": args.description,
                            "enabled": not args.disabled}, user=w.superuser())
    w.save_form(form, "create")
    return 0


def _list(args: argparse.Namespace) -> int:
    from webui.domains.models import Domain

    for d in Domain.objects.all():
        flag = "" if d.enabled else " (disabled)"
        print(f"{d.name}{flag}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    w.delete(_find(args.name))
    return 0


def _alias(args: argparse.Namespace) -> int:
    from webui.domains.forms import DomainAliasForm

    target = _find(args.target)
    form = DomainAliasForm(data={"name": args.alias, "target": target.pk}, user=w.superuser())
    w.save_form(form, "create")
    return 0
