"""``postern token create USER [--read-only] [--name NAME] | list | revoke PREFIX``: API
tokens. The token is printed once, on stdout; only its SHA-256 is stored."""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("token", help="API tokens")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create a token for USER and print it once")
    c.add_argument("user")
    c.add_argument("--read-only", action="store_true")
    c.add_argument("--name", default="")
    c.set_defaults(func=w.run(_create))
    ls = sub.add_parser("list")
    ls.set_defaults(func=w.run(_list))
    r = sub.add_parser("revoke", help="revoke the token starting with PREFIX")
    r.add_argument("prefix")
    r.set_defaults(func=w.run(_revoke))


def _create(args: argparse.Namespace) -> int:
    from django.contrib.auth import get_user_model

    from webui.accounts.models import ApiToken

    user = get_user_model().objects.filter(username=args.user, is_active=True).first()
    if user is None:
        raise w.CommandError(f"no admin {args.user} (postern admin add)", w.EX_NOUSER)
    from webui.core.changes import audit

    token, key = ApiToken.issue(user, read_only=args.read_only, name=args.name)
    audit(w.actor(), "cli", "create", token, None,
          {"user": user.username, "prefix": token.prefix, "read_only": token.read_only})
    print(key)
    return 0


def _list(args: argparse.Namespace) -> int:
    from webui.accounts.models import ApiToken

    for t in ApiToken.objects.select_related("user").order_by("created"):
        mode = "read-only" if t.read_only else "read-write"
        print(f"{t.prefix}\t{t.user.username}\t{mode}\t{t.name}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from webui.accounts.models import ApiToken

    if len(args.prefix) < 8:
        raise w.CommandError("give at least 8 characters of the token", w.EX_USAGE)
    deleted, _ = ApiToken.objects.filter(prefix__startswith=args.prefix[:12]).delete()
    if not deleted:
        raise w.CommandError(f"no token {args.prefix}", w.EX_NOUSER)
    return 0
