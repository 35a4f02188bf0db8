"""Login (throttled), logout (POST only) and the TOTP second-factor page."""

from __future__ import annotations

from django import forms
from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from webui.accounts import throttle, totp
from webui.accounts.middleware import SESSION_KEY


class LoginForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, max_length=1024)


class TotpForm(forms.Form):
    code = forms.CharField(max_length=6, min_length=6)


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return "/"


def login_view(request: HttpRequest) -> HttpResponse:
    form = LoginForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        username = form.cleaned_data["username"]
        addr = request.META.get("REMOTE_ADDR", "")
        if throttle.is_locked(username, addr):
            form.add_error(None, "Too many failed logins; try again later.")
            status = 429
        else:
            user = authenticate(request, username=username,
                                password=form.cleaned_data["password"])
            if user is None:
                throttle.record_failure(username, addr)
                form.add_error(None, "Wrong username or password.")
            else:
                throttle.clear(username)
                login(request, user)
                return redirect(_next(request))
    return render(request, "accounts/login.html", {"form": form, "next": _next(request)},
                  status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("login")


@login_required
def totp_view(request: HttpRequest) -> HttpResponse:
    profile = getattr(request.user, "postern_profile", None)
    if profile is None or not profile.totp_secret:
        return redirect("home")
    form = TotpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        addr = request.META.get("REMOTE_ADDR", "")
        name = request.user.get_username()
        if throttle.is_locked(name, addr):
            form.add_error(None, "Too many wrong codes; try again later.")
        elif totp.verify(profile.totp_secret, form.cleaned_data["code"]):
            request.session[SESSION_KEY] = True
            return redirect(_next(request))
        else:
            throttle.record_failure(name, addr)
            form.add_error("code", "Wrong code.")
    return render(request, "accounts/totp.html", {"form": form})
