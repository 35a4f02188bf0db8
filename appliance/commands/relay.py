"""``postern relay allow NETWORK | deny NETWORK | list``, ``postern relay domain add NAME
[--route HOST[:PORT]] | remove NAME``, ``postern relay smarthost HOST[:PORT] [--user USER
--password-stdin] | --off``. Writes the database and publishes before returning.
"""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("relay", help="relay networks, relay domains, smarthost")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    allow = sub.add_parser("allow", help="let clients in NETWORK relay")
    allow.add_argument("network", help="10.0.0.0/8, 2001:db8::/32, 192.168.1. or one address")
    allow.add_argument("--comment", default="")
    allow.set_defaults(func=w.run(_allow))
    deny = sub.add_parser("deny", help="stop NETWORK relaying (remove it)")
    deny.add_argument("network")
    deny.set_defaults(func=w.run(_deny))
    ls = sub.add_parser("list", help="networks, relay domains and the smarthost")
    ls.set_defaults(func=w.run(_list))
    dom = sub.add_parser("domain", help="relay (backup MX) domains")
    dsub = dom.add_subparsers(dest="domain_action", metavar="ACTION", required=True)
    dadd = dsub.add_parser("add")
    dadd.add_argument("name")
    dadd.add_argument("--route", default="", help="HOST[:PORT] (default: the domain's MX)")
    dadd.set_defaults(func=w.run(_domain_add))
    drm = dsub.add_parser("remove")
    drm.add_argument("name")
    drm.set_defaults(func=w.run(_domain_remove))
    sh = sub.add_parser("smarthost", help="send all outbound mail through HOST")
    sh.add_argument("host", nargs="?", help="HOST[:PORT]")
    sh.add_argument("--user", default="")
    sh.add_argument("--password-stdin", action="store_true")
    sh.add_argument("--off", action="store_true")
    sh.set_defaults(func=w.run(_smarthost))


def _hostport(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not sep:
        return text, None
    if not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise w.CommandError(f"{text}: the port is not a number", w.EX_DATAERR)
    return host, int(port)


def _allow(args: argparse.Namespace) -> int:
    from webui.relay.forms import RelayNetworkForm

    w.save_form(RelayNetworkForm(data={"network": args.network, "comment": args.comment},
                                 user=w.superuser()), "create")
    return 0


def _deny(args: argparse.Namespace) -> int:
    from django.core.exceptions import ValidationError

    from webui.core.networks import parse_network
    from webui.relay.models import RelayNetwork

    try:
        value, _ = parse_network(args.network)
    except ValidationError as exc:
        raise w.CommandError(f"{args.network}: {exc.messages[0]}", w.EX_DATAERR) from exc
    net = RelayNetwork.objects.filter(network=value).first()
    if net is None:
        raise w.CommandError(f"{value} is not a relay network", w.EX_NOUSER)
    w.delete(net)
    return 0


def _list(args: argparse.Namespace) -> int:
    from webui.relay.models import RelayDomain, RelayNetwork, Smarthost

    for n in RelayNetwork.objects.all():
        print(f"network\t{n.network}")
    for d in RelayDomain.objects.all():
        route = f"{d.route_host}:{d.route_port}" if d.route_port else d.route_host or "MX"
        print(f"domain\t{d.name}\t{route}")
    sh = Smarthost.objects.filter(pk=1, enabled=True).first()
    if sh:
        print(f"smarthost\t{sh.host}:{sh.port}\t{sh.username or '(no login)'}")
    return 0


def _domain_add(args: argparse.Namespace) -> int:
    from webui.relay.forms import RelayDomainForm

    host, port = _hostport(args.route) if args.route else ("", None)
    w.save_form(RelayDomainForm(data={"name": args.name, "route_host": host,
                                      "route_port": port or ""}, user=w.superuser()), "create")
    return 0


def _domain_remove(args: argparse.Namespace) -> int:
    from webui.core.validators import normalise_domain
    from webui.relay.models import RelayDomain

    d = RelayDomain.objects.filter(name=normalise_domain(args.name)).first()
    if d is None:
        raise w.CommandError(f"{args.name} is not a relay domain", w.EX_NOUSER)
    w.delete(d)
    return 0


def _smarthost(args: argparse.Namespace) -> int:
    from webui.core import changes
    from webui.relay.forms import SmarthostForm
    from webui.relay.models import Smarthost

    obj = Smarthost.load()
    before = changes.snapshot(obj)
    if args.off:
        data = {"enabled": False, "host": obj.host, "port": obj.port,
                "username": obj.username, "password": ""}
    else:
        if not args.host:
            raise w.CommandError("give HOST[:PORT] or --off", w.EX_USAGE)
        host, port = _hostport(args.host)
        password = w.read_password(args) if args.user else ""
        data = {"enabled": True, "host": host, "port": port or 25, "username": args.user,
                "password": password}
        if not args.user:
            obj.password = ""
    w.save_form(SmarthostForm(data=data, instance=obj, user=w.superuser()), "update", before)
    return 0
