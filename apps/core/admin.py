import json

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from .models import AuditEntry
from .pagination import EstimatedCountPaginator


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit trail: read-only, searchable by user, action and reason."""

    list_display = ("created_at", "user", "action", "object_type", "object_count", "short_reason")
    list_filter = ("action", "object_type", "created_at")
    search_fields = ("user__email", "action", "reason")
    list_select_related = ("user",)
    date_hierarchy = None
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 100
    fields = ("created_at", "user", "action", "reason", "object_type", "object_count", "affected", "details_json")
    readonly_fields = fields

    class Media:
        css = {"all": ("tasks/admin.css",)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="reason")
    def short_reason(self, entry):
        return entry.reason if len(entry.reason) <= 80 else entry.reason[:79] + "…"

    @admin.display(description="affected ids")
    def affected(self, entry):
        if not entry.object_ids:
            return "—"
        app_label, _, model_name = entry.object_type.partition(".")
        links = []
        for object_id in entry.object_ids:
            try:
                url = reverse(f"admin:{app_label}_{model_name}_change", args=[object_id])
            except NoReverseMatch:
                url = None
            links.append((url, object_id))
        more = entry.object_count - len(entry.object_ids)
        listed = format_html_join(
            ", ",
            "{}",
            ((format_html('<a href="{}"><code>{}</code></a>', url, oid) if url else oid,) for url, oid in links),
        )
        return format_html("{}{}", listed, f" … and {more:,} more" if more > 0 else "")

    @admin.display(description="details")
    def details_json(self, entry):
        return format_html('<pre class="tf-pre">{}</pre>', json.dumps(entry.details, indent=2, sort_keys=True))
