"""Every saved change goes through here: audit it, bump the configuration version, and enqueue
``publish_control_files`` once the transaction commits (delay_on_commit).

Called by the web views, the API and the CLI, inside their transaction. ``before`` and
``after`` are the objects' ``audit_dict()`` (never a password or its hash).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Model

from webui.audit.models import AuditEntry
from webui.core.scoping import object_domain


def audit(user: Any, via: str, action: str, obj: Model, before: dict[str, Any] | None,
          after: dict[str, Any] | None, *, domain: str | None = None) -> AuditEntry:
    """``user`` is a Django user, or a plain string naming who acted (the CLI's OS user)."""
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    name = user.get_username() if authenticated else (user if isinstance(user, str) else "system")
    return AuditEntry.objects.create(
        user=user if authenticated else None,
        username=name[:150],
        via=via, action=action, model=obj._meta.model_name or "", object_id=str(obj.pk or ""),
        object_repr=str(obj)[:300], domain=domain if domain is not None else object_domain(obj),
        before=before, after=after,
    )


def request_publish(*, enqueue: bool = True) -> None:
    """Mark the configuration changed and publish after the current transaction commits.

    The CLI passes ``enqueue=False``: it publishes itself, synchronously, before it returns.
    """
    from webui.publish.models import ConfigVersion
    from webui.publish.tasks import publish_control_files

    ConfigVersion.bump()
    if enqueue:
        publish_control_files.delay_on_commit()


def changed(user: Any, via: str, action: str, obj: Model, before: dict[str, Any] | None,
            *, domain: str | None = None) -> None:
    """Record one change (``create``/``update``/``delete``) and schedule a publish."""
    after = None if action == "delete" else _audit_dict(obj)
    audit(user, via, action, obj, before, after, domain=domain)
    request_publish(enqueue=via != "cli")


def _audit_dict(obj: Model) -> dict[str, Any] | None:
    fn = getattr(obj, "audit_dict", None)
    return fn() if fn else None


def snapshot(obj: Model) -> dict[str, Any] | None:
    """The audit view of ``obj`` now (call before changing it)."""
    return _audit_dict(obj)


@transaction.atomic
def delete(user: Any, via: str, obj: Model) -> None:
    before = snapshot(obj)
    domain = object_domain(obj)
    changed(user, via, "delete", obj, before, domain=domain)
    obj.delete()
