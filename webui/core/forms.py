"""Form helpers shared by the apps: every text field refuses control characters, and forms
take the requesting ``user`` so their domain choices are scoped to it.
"""

from __future__ import annotations

from typing import Any

from django import forms

from webui.core.scoping import user_domains
from webui.core.validators import refuse_control_characters


class ScopedModelForm(forms.ModelForm):  # type: ignore[type-arg]
    """A ModelForm whose ``domain`` field (if any) offers only the user's domains, and
    whose every text input is checked for control characters before anything else."""

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        for name in ("domain", "target"):
            f = self.fields.get(name)
            if isinstance(f, forms.ModelChoiceField) and user is not None:
                f.queryset = user_domains(user)

    multiline_fields: frozenset[str] = frozenset()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for name in self.fields:
            value = self.data.get(self.add_prefix(name))
            if isinstance(value, str) and name not in self.multiline_fields:
                try:
                    refuse_control_characters(value)
                except forms.ValidationError as exc:
                    self.add_error(name, exc)
        return data
