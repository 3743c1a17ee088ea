from django import forms
from django.contrib import admin, messages
from django.db import models
from django.utils.html import format_html

from apps.core.admin_errors import errors_on_form
from apps.core.admin_widgets import KeyCheckingAutocompleteMixin

from . import services
from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


class WebhookEndpointForm(forms.ModelForm):
    """The API's rules in the admin too: a public address, and the owner's quota on endpoints."""

    def clean(self):
        cleaned = super().clean()
        url, owner = cleaned.get("url"), cleaned.get("owner") or getattr(self.instance, "owner", None)
        with errors_on_form(self, field="url"):
            if url and "url" in self.changed_data:
                services.validate_url(url)
        with errors_on_form(self):
            if owner is not None and (self.instance._state.adding or owner.pk != self.instance.owner_id):
                services.endpoint_check_quota(owner)
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(KeyCheckingAutocompleteMixin, admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "owner", "enabled", "consecutive_failures", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "description", "owner__email")
    list_select_related = ("owner",)
    autocomplete_fields = ("owner",)
    exclude = ("secret",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("consecutive_failures", "disabled_reason", "created_at", "updated_at")

    def save_model(self, request, obj, form, change):
        previous_owner = form.initial.get("owner") if change else None
        super().save_model(request, obj, form, change)
        # Deliveries are recorded only for owners known to have endpoints (a cached flag).
        for owner_id in {obj.owner_id, previous_owner} - {None}:
            services.forget_owner(owner_id)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        services.forget_owner(obj.owner_id)

    def delete_queryset(self, request, queryset):
        owner_ids = set(queryset.values_list("owner_id", flat=True))
        super().delete_queryset(request, queryset)
        for owner_id in owner_ids:
            services.forget_owner(owner_id)


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
