"""The task list's filters. None of them runs a query to build its choices: at millions of
rows a DISTINCT or a facet count per filter would cost more than the page itself.

The owner filter is Django's autocomplete (its select widget, autocomplete.js and
AutocompleteJsonView), asked through OwnerAutocompleteView for who may use it.
"""

from datetime import datetime, time, timedelta

from django import forms
from django.contrib import admin
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth import get_user_model
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_date

from ..models import Task
from ..registry import all_kinds

HAS_ERROR_SQL = f"NOT ({Task._meta.db_table}.error = '')"


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
        # "yes" is served by the partial index task_has_error_created, whose predicate a
        # query must state with the literal '': a bound parameter (server-side binding) in a
        # prepared statement's generic plan cannot be proved to match it, and PostgreSQL
        # would scan the table for the few rows with an error.
        if self.value() == "yes":
            return queryset.filter(RawSQL(HAS_ERROR_SQL, (), output_field=BooleanField()))
        if self.value() == "no":
            return queryset.filter(error="")
        return queryset


def _other_params(request, mine: tuple[str, ...]) -> list[tuple[str, str]]:
    """The list's other query parameters, to carry through a filter's own little form."""
    return [(key, value) for key, values in request.GET.lists() if key not in mine and key != "p" for value in values]


class OwnerAutocompleteView(AutocompleteJsonView):
    """Django's autocomplete JSON for Task.owner, open to anyone who may view tasks.

    Django's own view (/admin/autocomplete/) asks for the users' view permission, which
    Viewers and Operators do not have; the task list shows them owners' emails anyway. The
    search, order and pages are the User admin's (search_fields, ordering), 20 a page.
    """

    task_admin = None

    def process_request(self, request):
        field = Task._meta.get_field("owner")
        user_admin = self.admin_site.get_model_admin(field.related_model)
        return request.GET.get("term", ""), user_admin, field, field.target_field.attname

    def has_perm(self, request, obj=None):
        return self.task_admin.has_view_permission(request)


class OwnerSelect(AutocompleteSelect):
    """Django's autocomplete select, fed by OwnerAutocompleteView."""

    url_name = "%s:tasks_task_owners"

    def build_attrs(self, base_attrs, extra_attrs=None):
        attrs = super().build_attrs(base_attrs, extra_attrs)
        attrs["data-placeholder"] = "Type an email…"  # Django's is empty
        return attrs

    def optgroups(self, name, value, attr=None):
        # A form shown again after a refused post holds what was posted: Django's widget looks
        # it up as a user id, and anything that is not one ("abc", NUL) was a server error.
        return super().optgroups(name, [item for item in value if _user_id(item) is not None], attr)


def _user_id(value) -> int | None:
    try:
        user_id = int(str(value))
    except ValueError:
        return None
    return user_id if 0 < user_id < 2**63 else None


class OwnerFilter(admin.ListFilter):
    """Owner by autocomplete: a user id (what the select sends) or an email (typed without JavaScript)."""

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
        self.admin_site = model_admin.admin_site
        self.selected = None
        if self.value:
            users = get_user_model().objects
            by_id = self.value.isdigit()
            self.selected = (
                users.filter(pk=int(self.value)) if by_id else users.filter(email__iexact=self.value)
            ).first()

    def select(self) -> str:
        users = forms.ModelChoiceField(
            queryset=get_user_model().objects.all(),
            required=False,
            widget=OwnerSelect(
                Task._meta.get_field("owner"),
                self.admin_site,
                attrs={"class": "tf-owner-filter", "aria-label": "Owner", "style": "width: 100%"},
            ),
        )
        return users.widget.render(self.parameter_name, self.selected.pk if self.selected else None)

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
