"""Admin accounts (superadmin only, generic CRUD) and API tokens (each user its own; a
superadmin also for others). A new token is shown once, on the page that created it."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webui.accounts.forms import AdminForm, TokenForm
from webui.accounts.models import ApiToken
from webui.core.changes import audit
from webui.core.scoping import is_superadmin
from webui.core.views import ObjectAdmin


ADMINS = ObjectAdmin(
    model=get_user_model(), form_class=AdminForm, name="admin", title="Admins",
    columns=[("User", "username"), ("Active", "is_active")],
    search_fields=["username"], domain_path=None, superadmin_only=True,
    links=[("API tokens", "token-list")],
)


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    qs = ApiToken.objects.select_related("user").order_by("-created")
    if not is_superadmin(request.user):
        qs = qs.filter(user=request.user)
    form = TokenForm(request.POST or None)
    if not is_superadmin(request.user):
        del form.fields["user"]
    new_key = None
    if request.method == "POST" and form.is_valid():
        owner = form.cleaned_data.get("user") or request.user
        token, new_key = ApiToken.issue(owner, read_only=form.cleaned_data["read_only"],
                                        name=form.cleaned_data["name"])
        audit(request.user, "web", "create", token, None,
              {"user": owner.get_username(), "prefix": token.prefix,
               "read_only": token.read_only})
        form = TokenForm()
    return render(request, "accounts/tokens.html", {"tokens": qs, "form": form,
                                                    "new_key": new_key})


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    qs = ApiToken.objects.all()
    if not is_superadmin(request.user):
        qs = qs.filter(user=request.user)
    token = qs.filter(pk=pk).first()
    if token is None:
        raise Http404("no such token")
    audit(request.user, "web", "delete", token, {"prefix": token.prefix}, None)
    token.delete()
    messages.success(request, "Token revoked.")
    return redirect("token-list")
