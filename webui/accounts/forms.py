"""Admin accounts (superadmin only) and API tokens."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password

from webui.accounts.models import AdminProfile
from webui.core.forms import ScopedModelForm
from webui.domains.models import Domain


class AdminForm(ScopedModelForm):
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                               max_length=1024, help_text="leave empty to keep the current one")
    domains = forms.ModelMultipleChoiceField(queryset=Domain.objects.all(), required=False,
                                             help_text="for a domain admin (not a superadmin)")

    class Meta:
        model = get_user_model()
        fields = ["username", "is_superuser", "is_active"]
        labels = {"is_superuser": "Superadmin"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.fields["password"].required = True
            self.fields["password"].help_text = ""
        else:
            profile = AdminProfile.objects.filter(user=self.instance).first()
            if profile:
                self.initial["domains"] = list(profile.domains.all())

    def clean_password(self) -> str:
        value = self.cleaned_data.get("password", "")
        if value:
            validate_password(value)
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance.pk and self.instance.pk == getattr(self.user, "pk", None) and \
                not data.get("is_superuser"):
            self.add_error("is_superuser", "you cannot take away your own superadmin role")
        return data

    def save(self, commit: bool = True) -> Any:
        user = super().save(commit=False)
        user.is_staff = user.is_superuser
        if self.cleaned_data.get("password"):
            user.set_password(self.cleaned_data["password"])
        user.save()
        profile, _ = AdminProfile.objects.get_or_create(user=user)
        profile.domains.set([] if user.is_superuser else self.cleaned_data.get("domains", []))
        return user


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    read_only = forms.BooleanField(required=False)
    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True),
                                  required=False, help_text="default: yourself")
