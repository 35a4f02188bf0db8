"""``postern access add 'RULE' [--position N] | list | remove POSITION | test IP``: TCP access
rules in tcprules syntax (``192.168.1.:allow,RELAYCLIENT=""``), checked by smtpd's parser.
Writes the database and publishes before returning.
"""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("access", help="TCP access rules (tcp.smtp)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a rule, e.g. '10.:allow,RELAYCLIENT=\"\"'")
    add.add_argument("rule")
    add.add_argument("--position", type=int, default=None, help="default: after the last")
    add.add_argument("--comment", default="")
    add.set_defaults(func=w.run(_add))
    ls = sub.add_parser("list", help="rules in the order smtpd applies them")
    ls.set_defaults(func=w.run(_list))
    rm = sub.add_parser("remove", help="remove the rule at POSITION")
    rm.add_argument("position", type=int)
    rm.set_defaults(func=w.run(_remove))
    t = sub.add_parser("test", help="which rule matches this client?")
    t.add_argument("ip")
    t.add_argument("--host", default=None)
    t.set_defaults(func=w.run(_test))


def _add(args: argparse.Namespace) -> int:
    from webui.access.forms import AccessRuleForm
    from webui.access.models import AccessRule
    from webui.access.rules import parse_rule

    typed = parse_rule(args.rule)
    position = args.position
    if position is None:
        last = AccessRule.objects.order_by("-position").first()
        position = (last.position + 10) if last else 10
    form = AccessRuleForm(data={"position": position, "pattern": typed.pattern,
                                "action": typed.action, "comment": args.comment,
                                "variables": "\n".join(f'{k}="{v}"' for k, v in
                                                       typed.variables.items())},
                          user=w.superuser())
    w.save_form(form, "create")
    return 0


def _list(args: argparse.Namespace) -> int:
    from webui.access.models import AccessRule
    from webui.access.rules import application_order

    for r in application_order(AccessRule.objects.all()):
        print(f"{r.position}\t{r.rule}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from webui.access.models import AccessRule

    rules = list(AccessRule.objects.filter(position=args.position))
    if not rules:
        raise w.CommandError(f"no rule at position {args.position}", w.EX_NOUSER)
    for r in rules:
        w.delete(r)
    return 0


def _test(args: argparse.Namespace) -> int:
    from webui.access.models import AccessRule
    from webui.access.rules import which_rule
    from webui.publish.render import AccessRow
    from webui.relay.models import RelayNetwork

    rows = [AccessRow(r.pattern, r.action, r.variables) for r in AccessRule.objects.all()]
    try:
        match = which_rule(rows, [n.network for n in RelayNetwork.objects.all()], args.ip,
                           args.host)
    except ValueError as exc:
        raise w.CommandError(f"{args.ip}: {exc}", w.EX_DATAERR) from exc
    print(match.line or "no rule matches: allow")
    return 0
