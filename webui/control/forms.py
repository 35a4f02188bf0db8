"""The form for one setting: validated by its registry entry."""

from __future__ import annotations

from typing import Any

from django import forms

from webui.control.registry import SettingSpec
from webui.core.validators import refuse_control_characters


class SettingForm(forms.Form):
    value = forms.CharField(max_length=1000)

    def __init__(self, *args: Any, spec: SettingSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        if spec.multiline:
            self.fields["value"].widget = forms.Textarea(attrs={"rows": 6})
        self.fields["value"].help_text = f"{spec.help}. qmail's default: {spec.default}"

    def clean_value(self) -> str:
        value: str = self.cleaned_data["value"]
        if not self.spec.multiline:
            refuse_control_characters(value)
        return self.spec.check(value)
