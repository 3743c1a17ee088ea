import json

from django import forms
from django.contrib.admin.helpers import ActionForm

from .models import TaskPriority
from .registry import kinds_for

REASON_MAX = 500


class TaskActionForm(ActionForm):
    """The changelist's action bar, with a reason that goes into each TaskEvent and the audit."""

    reason = forms.CharField(
        required=False,
        max_length=REASON_MAX,
        label="Reason",
        widget=forms.TextInput(attrs={"placeholder": "Reason (optional)", "size": 30}),
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(required=False, max_length=REASON_MAX, widget=forms.TextInput(attrs={"size": 60}))


class PrettyJSONField(forms.JSONField):
    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class TaskCopyForm(forms.Form):
    """A new task from an existing one's kind and payload, editable before it is submitted."""

    kind = forms.ChoiceField()
    title = forms.CharField(max_length=200, required=False)
    priority = forms.ChoiceField(choices=TaskPriority.choices)
    max_retries = forms.IntegerField(min_value=0, max_value=100, required=False)
    payload = PrettyJSONField(widget=forms.Textarea(attrs={"rows": 14, "cols": 80, "class": "tf-mono"}))
    reason = forms.CharField(required=False, max_length=REASON_MAX, widget=forms.TextInput(attrs={"size": 60}))

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        # The kinds the copy's owner may submit (staff-only kinds only for staff owners).
        self.fields["kind"].choices = [(kind.name, kind.name) for kind in kinds_for(owner)]

    def clean_payload(self):
        payload = self.cleaned_data["payload"]
        if not isinstance(payload, dict):
            raise forms.ValidationError("The payload must be a JSON object.")
        return payload
