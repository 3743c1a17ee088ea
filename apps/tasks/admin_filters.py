"""The task list's filters. None of them runs a query to build its choices: at millions of
rows a DISTINCT or a facet count per filter would cost more than the page itself."""

from datetime import datetime, time, timedelta

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date

from .registry import all_kinds


class KindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [(kind.name, kind.name) for kind in all_kinds()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(kind=self.value())
        return queryset


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request, model_admin):
        return [("yes", "Has an error"), ("no", "No error")]

    def queryset(self, request, queryset):
        # "yes" is served by the partial index task_has_error_created.
        if self.value() == "yes":
            return queryset.exclude(error="")
        if self.value() == "no":
            return queryset.filter(error="")
        return queryset


def _other_params(request, mine: tuple[str, ...]) -> list[tuple[str, str]]:
    """The list's other query parameters, to carry through a filter's own little form."""
    return [(key, value) for key, values in request.GET.lists() if key not in mine and key != "p" for value in values]


class OwnerFilter(admin.ListFilter):
    """Owner by autocomplete (select2 from the admin, fed by TaskAdmin's owner search)."""

    title = "owner"
    parameter_name = "owner"
    template = "admin/tasks/filters/owner.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.value = None
        if self.parameter_name in params:
            value = params.pop(self.parameter_name)[-1]
            self.used_parameters[self.parameter_name] = value
            self.value = value
        self.other_params = _other_params(request, (self.parameter_name,))
        self.autocomplete_url = reverse("admin:tasks_task_owners")
        self.selected = None
        if self.value and self.value.isdigit():
            self.selected = get_user_model().objects.filter(pk=int(self.value)).first()

    def has_output(self):
        return True

    def expected_parameters(self):
        return [self.parameter_name]

    def choices(self, changelist):
        yield {
            "selected": self.value is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
        }

    def queryset(self, request, queryset):
        if not self.value:
            return queryset
        if self.value.isdigit():
            return queryset.filter(owner_id=int(self.value))
        return queryset.filter(owner__email__iexact=self.value)


class CreatedFilter(admin.ListFilter):
    """Created within the last hour/day/week/month, or between two dates (UTC, inclusive)."""

    title = "created"
    template = "admin/tasks/filters/created.html"
    WITHIN = "created_within"
    FROM = "created_from"
    TO = "created_to"
    PRESETS = {
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(days=1)),
        "7d": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
    }

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in (self.WITHIN, self.FROM, self.TO):
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]
        self.other_params = _other_params(request, (self.WITHIN, self.FROM, self.TO))
        self.date_from = self.used_parameters.get(self.FROM, "")
        self.date_to = self.used_parameters.get(self.TO, "")

    def has_output(self):
        return True

    def expected_parameters(self):
        return [self.WITHIN, self.FROM, self.TO]

    def choices(self, changelist):
        current = self.used_parameters.get(self.WITHIN)
        everything = (self.WITHIN, self.FROM, self.TO)
        yield {
            "selected": not self.used_parameters,
            "query_string": changelist.get_query_string(remove=everything),
            "display": "Any time",
        }
        for key, (label, _) in self.PRESETS.items():
            yield {
                "selected": current == key,
                "query_string": changelist.get_query_string({self.WITHIN: key}, remove=[self.FROM, self.TO]),
                "display": label,
            }

    @staticmethod
    def _day_start(value: str):
        day = parse_date(value) if value else None
        if day is None:
            return None
        return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())

    def queryset(self, request, queryset):
        preset = self.PRESETS.get(self.used_parameters.get(self.WITHIN, ""))
        if preset:
            queryset = queryset.filter(created_at__gte=timezone.now() - preset[1])
        start = self._day_start(self.date_from)
        if start:
            queryset = queryset.filter(created_at__gte=start)
        end = self._day_start(self.date_to)
        if end:
            queryset = queryset.filter(created_at__lt=end + timedelta(days=1))
        return queryset
