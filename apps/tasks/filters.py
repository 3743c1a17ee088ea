from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from apps.core.exceptions import InvalidInput
from apps.core.filters import StrictFilterSet
from apps.core.json_contains import contains_filter, parse_json_object

from .models import Task, TaskPriority, TaskStatus


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, normalised to UTC. Python accepts offsets up to ±24 h, PostgreSQL only up to
    ±15:59: passed through as given, `+19:01` was a database error (a 500)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
            raise ValidationError("This date and time is out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class JSONObjectField(forms.CharField):
    """A JSON object given as text (`{"customer": 42}`), decoded; errors name the parameter."""

    def __init__(self, *, parameter: str, **kwargs):
        self.parameter = parameter
        super().__init__(strip=False, **kwargs)  # "  " is not JSON: a 400, not "no filter"

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return None
        try:
            return parse_json_object(text, name=self.parameter)
        except InvalidInput as exc:
            raise ValidationError(exc.messages, code="invalid") from None


class JSONContainsFilter(django_filters.Filter):
    """Tasks whose JSON column contains the given object (PostgreSQL's `@>`, by index)."""

    field_class = JSONObjectField

    def __init__(self, *, field_name: str, **kwargs):
        super().__init__(field_name=field_name, parameter=f"{field_name}_contains", **kwargs)

    def filter(self, queryset, value):
        if value is None:
            return queryset
        return queryset.filter(contains_filter(self.field_name, value))


JSON_CONTAINS_HELP = (
    'A JSON object the task\'s {column} must contain, e.g. {{"customer": 42}} or {{"order": {{"id": 7}}}}: '
    'every key present with an equal value (numbers and strings differ: 42 is not "42"), arrays '
    "holding the given elements. Combines with every other filter."
)


class TaskFilter(StrictFilterSet):
    status = django_filters.MultipleChoiceFilter(choices=TaskStatus.choices)
    kind = django_filters.CharFilter()
    priority = django_filters.ChoiceFilter(choices=TaskPriority.choices)
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    search = django_filters.CharFilter(field_name="title", lookup_expr="icontains")
    owner = django_filters.CharFilter(method="filter_owner", help_text="Staff only: an owner's email or id.")
    payload_contains = JSONContainsFilter(field_name="payload", help_text=JSON_CONTAINS_HELP.format(column="payload"))
    result_contains = JSONContainsFilter(field_name="result", help_text=JSON_CONTAINS_HELP.format(column="result"))

    class Meta:
        model = Task
        fields = [
            "status",
            "kind",
            "priority",
            "created_after",
            "created_before",
            "search",
            "owner",
            "payload_contains",
            "result_contains",
        ]

    def filter_owner(self, queryset, name, value):
        if not self.request.user.is_staff:
            return queryset  # owners only ever see their own tasks anyway
        if value.isdigit():
            return queryset.filter(owner_id=int(value))
        return queryset.filter(owner__email__iexact=value)
