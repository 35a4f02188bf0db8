"""Access-rule pages: the generic CRUD, a list in the order smtpd applies the rules, and the
"which rule matches this IP?" tester (answered by smtpd's own tcprules parser)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from webui.access.forms import AccessRuleForm, TesterForm
from webui.access.models import AccessRule
from webui.access.rules import application_order, which_rule
from webui.core.scoping import is_superadmin
from webui.core.views import ObjectAdmin
from webui.publish.render import AccessRow
from webui.relay.models import RelayNetwork

ACCESS = ObjectAdmin(
    model=AccessRule, form_class=AccessRuleForm, name="accessrule", title="TCP access rules",
    columns=[("Position", "position"), ("Rule (tcp.smtp)", "rule"), ("Comment", "comment")],
    search_fields=["pattern", "comment"], domain_path=None, superadmin_only=True,
)


@login_required
def rules_view(request: HttpRequest) -> HttpResponse:
    if not is_superadmin(request.user):
        raise PermissionDenied("only a superadmin may see access rules")
    rules = list(AccessRule.objects.all())
    networks = list(RelayNetwork.objects.all())
    ordered = application_order(rules)
    form = TesterForm(request.GET or None)
    match = None
    error = None
    if request.GET and form.is_valid():
        rows = [AccessRow(r.pattern, r.action, r.variables) for r in rules]
        try:
            match = which_rule(rows, [n.network for n in networks], form.cleaned_data["ip"],
                               form.cleaned_data["host"] or None)
        except (ValidationError, ValueError) as exc:
            error = str(exc)
    matched_rule = None
    if match is not None and match.line:
        matched_rule = next((r for r in rules if r.pattern == match.source), None)
    return render(request, "access/rules.html", {
        "ordered": ordered, "networks": networks, "form": form, "match": match,
        "matched_rule": matched_rule, "error": error, "admin": ACCESS,
    })
