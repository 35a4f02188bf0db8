"""``postern alias add SOURCE TARGET... | list | remove SOURCE``: forwards and catch-alls
(SOURCE ``@domain``). Loops are refused with the cycle named. Writes the database and
publishes before returning.
"""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("alias", help="aliases, forwards, catch-alls")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add or replace an alias")
    add.add_argument("source", help="local@domain, or @domain for the catch-all")
    add.add_argument("targets", nargs="+")
    add.set_defaults(func=w.run(_add))
    ls = sub.add_parser("list", help="list aliases")
    ls.set_defaults(func=w.run(_list))
    rm = sub.add_parser("remove", help="remove an alias")
    rm.add_argument("source")
    rm.set_defaults(func=w.run(_remove))


def _split(source: str):  # type: ignore[no-untyped-def]
    from django.core.exceptions import ValidationError

    from webui.core.validators import normalise_domain
    from webui.domains.models import Domain

    if source.startswith("@"):
        try:
            name, local = normalise_domain(source[1:]), ""
        except ValidationError as exc:
            raise w.CommandError(f"{source}: {exc.messages[0]}", w.EX_DATAERR) from exc
        domain = Domain.objects.filter(name=name).first()
        if domain is None:
            raise w.CommandError(f"{name} is not a hosted domain", w.EX_NOUSER)
        return domain, local
    from appliance.commands.mailbox import split

    return split(source)


def _find(source: str):  # type: ignore[no-untyped-def]
    from webui.aliases.models import Alias

    domain, local = _split(source)
    alias = Alias.objects.filter(domain=domain, local_part__iexact=local).first()
    return domain, local, alias


def _add(args: argparse.Namespace) -> int:
    from webui.aliases.forms import AliasForm
    from webui.core import changes

    domain, local, alias = _find(args.source)
    before = changes.snapshot(alias) if alias else None
    form = AliasForm(data={"local_part": local, "domain": domain.pk,
                           "targets": "\n".join(args.targets), "enabled": True},
                     instance=alias, user=w.superuser())
    w.save_form(form, "update" if alias else "create", before)
    return 0


def _list(args: argparse.Namespace) -> int:
    from webui.aliases.models import Alias

    for a in Alias.objects.select_related("domain"):
        print(f"{a.source}: {', '.join(a.targets)}{'' if a.enabled else ' (disabled)'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _, _, alias = _find(args.source)
    if alias is None:
        raise w.CommandError(f"no alias {args.source}", w.EX_NOUSER)
    w.delete(alias)
    return 0
