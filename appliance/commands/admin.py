"""``postern admin add USER (--superuser | --domain NAME...) --password-stdin | list |
remove USER``: web admin accounts and their roles."""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("admin", help="web admin accounts")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add an admin (or change its password and role)")
    add.add_argument("user")
    role = add.add_mutually_exclusive_group(required=True)
    role.add_argument("--superuser", action="store_true")
    role.add_argument("--domain", action="append", metavar="NAME", help="repeatable")
    add.add_argument("--password-stdin", action="store_true")
    add.set_defaults(func=w.run(_add))
    ls = sub.add_parser("list")
    ls.set_defaults(func=w.run(_list))
    rm = sub.add_parser("remove")
    rm.add_argument("user")
    rm.set_defaults(func=w.run(_remove))
    totp = sub.add_parser("totp", help="turn on the TOTP second factor (prints the secret once)")
    totp.add_argument("user")
    totp.add_argument("--off", action="store_true", help="turn it off")
    totp.set_defaults(func=w.run(_totp))


def _audit(action: str, user: object, after: dict[str, object] | None) -> None:
    from webui.core.changes import audit

    audit(w.actor(), "cli", action, user, None, after)  # type: ignore[arg-type]


def _add(args: argparse.Namespace) -> int:
    import re

    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password
    from django.db import transaction

    from webui.accounts.models import AdminProfile
    from webui.core.validators import normalise_domain
    from webui.domains.models import Domain

    if not re.fullmatch(r"[A-Za-z0-9@.+_-]{1,150}", args.user):
        raise w.CommandError(f"{args.user[:40]!r}: letters, digits and @.+-_ only", w.EX_DATAERR)
    password = w.read_password(args)
    validate_password(password)
    domains = []
    for name in args.domain or []:
        d = Domain.objects.filter(name=normalise_domain(name)).first()
        if d is None:
            raise w.CommandError(f"no domain {name}", w.EX_NOUSER)
        domains.append(d)
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(username=args.user).first() or User(username=args.user)
        user.is_superuser = user.is_staff = bool(args.superuser)
        user.is_active = True
        user.set_password(password)
        user.save()
        profile, _ = AdminProfile.objects.get_or_create(user=user)
        profile.domains.set(domains)
        _audit("update", user, {"username": user.username, "superuser": user.is_superuser,
                                "domains": [d.name for d in domains]})
    return 0


def _list(args: argparse.Namespace) -> int:
    from django.contrib.auth import get_user_model

    for u in get_user_model().objects.order_by("username"):
        if u.is_superuser:
            role = "superuser"
        else:
            profile = getattr(u, "postern_profile", None)
            names = [d.name for d in profile.domains.all()] if profile else []
            role = "domains: " + (", ".join(names) or "(none)")
        print(f"{u.username}\t{role}{'' if u.is_active else ' (inactive)'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=args.user).first()
    if user is None:
        raise w.CommandError(f"no admin {args.user}", w.EX_NOUSER)
    _audit("delete", user, None)
    user.delete()
    return 0


def _totp(args: argparse.Namespace) -> int:
    from django.contrib.auth import get_user_model

    from webui.accounts import totp
    from webui.accounts.models import AdminProfile

    user = get_user_model().objects.filter(username=args.user).first()
    if user is None:
        raise w.CommandError(f"no admin {args.user}", w.EX_NOUSER)
    profile, _ = AdminProfile.objects.get_or_create(user=user)
    profile.totp_secret = "" if args.off else totp.new_secret()
    profile.save()
    _audit("update", user, {"username": user.username, "totp": not args.off})
    if not args.off:
        print(profile.totp_secret)
        print(totp.provisioning_uri(profile.totp_secret, user.username))
    return 0
