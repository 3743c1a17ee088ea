from django.contrib import admin, messages
from django.db import models
from django.utils.html import format_html

from . import services
from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "enabled", "consecutive_failures", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "description", "owner__email")
    list_select_related = ("owner",)
    autocomplete_fields = ("owner",)
    exclude = ("secret",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("consecutive_failures", "disabled_reason", "created_at", "updated_at")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "created_at", "status_code", "duration_ms", "error", "response_snippet")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "url", "owner", "colored_status", "attempts", "last_status_code", "created_at")
    list_filter = ("status", "event")
    search_fields = ("url", "owner__email", "=task__id", "=id")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "endpoint", "task", "redelivery_of")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]
    show_full_result_count = False

    @admin.display(description="Status", ordering="status")
    def colored_status(self, delivery):
        colour = {"succeeded": "#2e7d32", "failed": "#c62828"}.get(delivery.status, "#6d4c41")
        return format_html('<strong style="color:{}">{}</strong>', colour, delivery.get_status_display())

    def has_add_permission(self, request):
        return False

    @admin.action(description="Redeliver selected deliveries", permissions=["change"])
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset.select_related("endpoint"):
            services.delivery_redeliver(delivery=delivery)
            count += 1
        self.message_user(request, f"Queued {count} redelivery(ies).", messages.SUCCESS)
