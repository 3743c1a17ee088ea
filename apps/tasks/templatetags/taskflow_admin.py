from django import template

register = template.Library()


@register.filter
def thousands(value):
    """1234567 → 1,234,567 (None stays a dash)."""
    if value is None:
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value


@register.inclusion_tag("admin/change_list_results.html")
def fast_result_list(changelist):
    """Django's result list markup, rendered in one pass (see apps/core/admin_list.py)."""
    from apps.core.admin_list import result_list_context

    return result_list_context(changelist)
