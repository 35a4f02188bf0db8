"""Relay pages: networks and relay domains (generic CRUD, superadmin only) and the smarthost."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from webui.core import changes
from webui.core.scoping import is_superadmin
from webui.core.views import ObjectAdmin
from webui.relay.forms import RelayDomainForm, RelayNetworkForm, SmarthostForm
from webui.relay.models import RelayDomain, RelayNetwork, Smarthost

NETWORKS = ObjectAdmin(
    model=RelayNetwork, form_class=RelayNetworkForm, name="relaynetwork",
    title="Networks allowed to relay", columns=[("Network", "network"), ("Comment", "comment")],
    search_fields=["network", "comment"], domain_path=None, superadmin_only=True,
    help="Clients in these networks may send mail to any domain (RELAYCLIENT in tcp.smtp).",
    links=[("Relay domains", "relaydomain-list"), ("Smarthost", "smarthost"),
           ("Access rules", "accessrule-list")],
)
RELAY_DOMAINS = ObjectAdmin(
    model=RelayDomain, form_class=RelayDomainForm, name="relaydomain",
    title="Relay domains (backup MX)",
    columns=[("Domain", "name"), ("Route host", "route_host"), ("Port", "route_port")],
    search_fields=["name", "route_host"], domain_path=None, superadmin_only=True,
    help="We accept mail for these domains and pass it on to the route (or the domain's MX).",
    links=[("Relay networks", "relaynetwork-list"), ("Smarthost", "smarthost")],
)


@login_required
def smarthost_view(request: HttpRequest) -> HttpResponse:
    if not is_superadmin(request.user):
        raise PermissionDenied("only a superadmin may set the smarthost")
    obj = Smarthost.load()
    before = changes.snapshot(obj)
    form = SmarthostForm(request.POST or None, instance=obj, user=request.user)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            obj = form.save()
            changes.changed(request.user, "web", "update", obj, before)
        messages.success(request, "Smarthost saved; publishing.")
        return redirect("smarthost")
    return render(request, "relay/smarthost.html", {"form": form})
