"""Query filters for the API: an empty value is invalid, not "no filter".

django-filter skips a filter given as `?status=` and lists everything, as an HTML form
would want. An API client that sent an empty status or date meant something else, so for
every filter but free text it is a 400 naming the parameter, like any other invalid value.
"""

from django_filters import CharFilter
from django_filters import rest_framework as filters


class StrictFilterSet(filters.FilterSet):
    def get_form_class(self):
        form_class = super().get_form_class()
        no_blank = [name for name, filter_ in self.filters.items() if not isinstance(filter_, CharFilter)]

        class StrictForm(form_class):
            def clean(self):
                cleaned_data = super().clean()
                for name in no_blank:
                    values = self.data.getlist(name) if hasattr(self.data, "getlist") else [self.data.get(name)]
                    if name in self.data and "" in values:
                        self.add_error(name, "This value may not be blank: leave the parameter out instead.")
                return cleaned_data

        return StrictForm


class FilterBackend(filters.DjangoFilterBackend):
    """django-filter's backend, building the filter sets of `filterset_fields` strictly too."""

    filterset_base = StrictFilterSet
