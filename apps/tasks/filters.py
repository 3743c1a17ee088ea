import django_filters

from .models import Task, TaskPriority, TaskStatus


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=TaskStatus.choices)
    kind = django_filters.CharFilter()
    priority = django_filters.ChoiceFilter(choices=TaskPriority.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
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
