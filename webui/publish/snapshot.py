"""Read everything one publish writes from the database, in one transaction, as plain rows
for the pure renderer (webui/publish/render.py). Called only by the publish task."""

from __future__ import annotations

from django.db import transaction

from webui.publish.render import (AccessRow, AliasRow, DomainAliasRow, DomainRow, MailboxRow,
                                  RelayDomainRow, SmarthostRow, Snapshot)


def read_snapshot() -> tuple[Snapshot, int]:
    """The current rows and the configuration version they belong to."""
    from webui.access.models import AccessRule
    from webui.aliases.models import Alias
    from webui.control.models import ControlSetting
    from webui.domains.models import Domain, DomainAlias
    from webui.mailboxes.models import Mailbox
    from webui.publish.models import ConfigVersion
    from webui.relay.models import RelayDomain, RelayNetwork, Smarthost

    with transaction.atomic():
        version = ConfigVersion.current()
        smarthost = Smarthost.objects.filter(pk=1, enabled=True).first()
        snap = Snapshot(
            domains=[DomainRow(d.name, d.enabled) for d in Domain.objects.all()],
            domain_aliases=[DomainAliasRow(a.name, a.target.name)
                            for a in DomainAlias.objects.select_related("target")],
            mailboxes=[MailboxRow(m.address, m.password_hash, m.quota, m.enabled)
                       for m in Mailbox.objects.select_related("domain")],
            aliases=[AliasRow(a.source, tuple(a.targets), a.enabled)
                     for a in Alias.objects.select_related("domain")],
            access_rules=[AccessRow(r.pattern, r.action, dict(r.variables))
                          for r in AccessRule.objects.order_by("position", "id")],
            relay_networks=[n.network for n in RelayNetwork.objects.order_by("network")],
            relay_domains=[RelayDomainRow(r.name, r.route_host, r.route_port)
                           for r in RelayDomain.objects.all()],
            smarthost=(SmarthostRow(smarthost.host, smarthost.port, smarthost.username,
                                    smarthost.password) if smarthost else None),
            settings={s.name: s.value for s in ControlSetting.objects.all()},
        )
    return snap, version
