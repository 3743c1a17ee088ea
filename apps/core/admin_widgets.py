"""Admin widgets every app's ModelAdmins share."""

from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError


class KeyCheckingAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete select, without its server error on a posted value that is not a
    key of the target: a form shown again after a refused post looks the value up, and "abc"
    (or a number past bigint) made that a 500. Such a value shows as no choice; the form's own
    validation names the field."""

    def optgroups(self, name, value, attr=None):
        return super().optgroups(name, [item for item in value if _is_key(self.field.target_field, item)], attr)


def _is_key(field, value) -> bool:
    try:
        key = field.to_python(value)
    except ValidationError:
        return False
    return not isinstance(key, int) or -(2**63) <= key < 2**63


class KeyCheckingAutocompleteMixin:
    """For ModelAdmins with autocomplete_fields: their selects are KeyCheckingAutocompleteSelect."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = KeyCheckingAutocompleteSelect(db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
