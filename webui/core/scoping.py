"""Who may see what: a superadmin sees everything; a domain admin only the domains assigned
to it and the objects under them. Every view, API endpoint and form builds its querysets here,
so an id guessed from another domain is simply not found (404), never shown.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet

from webui.domains.models import Domain


def is_superadmin(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_superuser)


def user_domains(user: Any) -> QuerySet[Domain]:
    """The domains ``user`` administers (all of them for a superadmin)."""
    if is_superadmin(user):
        return Domain.objects.all()
    if not (user and user.is_authenticated and user.is_active):
        return Domain.objects.none()
    return Domain.objects.filter(admins__user=user)


def scope_queryset(qs: QuerySet[Any], user: Any, domain_path: str | None) -> QuerySet[Any]:
    """Restrict ``qs`` to ``user``'s domains.

    Args:
        domain_path: the lookup from the model to its Domain (``"domain"``, ``"target"``;
            ``""`` for Domain itself); ``None`` for global objects only a superadmin may see.
    """
    if is_superadmin(user):
        return qs
    if domain_path is None:
        return qs.none()
    domains = user_domains(user)
    if domain_path == "":
        return qs.filter(pk__in=domains.values("pk"))
    return qs.filter(**{f"{domain_path}__in": domains})


def may_use_domain(user: Any, domain: Domain | None) -> bool:
    return domain is not None and user_domains(user).filter(pk=domain.pk).exists()


def object_domain(obj: Model) -> str:
    return str(getattr(obj, "scope_domain", "") or "")
