from datetime import UTC

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from apps.core.filters import StrictFilterSet

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


class TaskFilter(StrictFilterSet):
    status = django_filters.MultipleChoiceFilter(choices=TaskStatus.choices)
    kind = django_filters.CharFilter()
    priority = django_filters.ChoiceFilter(choices=TaskPriority.choices)
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    search = django_filters.CharFilter(field_name="title", lookup_expr="icontains")
    owner = django_filters.CharFilter(method="filter_owner", help_text="Staff only: an owner's email or id.")

    class Meta:
        model = Task
        fields = ["status", "kind", "priority", "created_after", "created_before", "search", "owner"]

    def filter_owner(self, queryset, name, value):
        if not self.request.user.is_staff:
            return queryset  # owners only ever see their own tasks anyway
        if value.isdigit():
            return queryset.filter(owner_id=int(value))
        return queryset.filter(owner__email__iexact=value)
