from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.db.models import Count
from django.utils.html import format_html_join

from apps.core.admin_widgets import KeyCheckingAutocompleteMixin
from apps.core.services import audited
from apps.tasks.models import Task, TaskStatus

from . import services
from .models import ApiKey, Quota, User


def revoke_api_keys(*, keys, actor, reason: str = "") -> int:
    """Revoke the active keys among `keys` and record it in the audit trail."""
    with audited(user=actor, action="api_key.revoke", reason=reason, object_type="accounts.apikey") as audit:
        revoked = []
        for api_key in keys.filter(revoked_at__isnull=True).select_related("user"):
            services.api_key_revoke(api_key=api_key)
            revoked.append(api_key)
        if revoked:
            audit.update(
                object_ids=[api_key.pk for api_key in revoked],
                details={"keys": [f"{api_key.user.email}: {api_key.prefix}" for api_key in revoked]},
            )
        else:
            audit.discard()
    return len(revoked)


class UserChangeList(ChangeList):
    """Attaches each listed user's task counts by status with one grouped query for the page."""

    def get_results(self, request):
        super().get_results(request)
        users = list(self.result_list)
        counts: dict[int, dict[str, int]] = {user.pk: {} for user in users}
        rows = (
            Task.objects.filter(owner_id__in=counts).values("owner_id", "status").annotate(n=Count("status")).order_by()
        )
        for row in rows:
            counts[row["owner_id"]][row["status"]] = row["n"]
        for user in users:
            user.task_counts = counts[user.pk]
        self.result_list = users


class EmailFormMixin:
    """Addresses are stored lowercased (as registration and the manager do), so `Bob@x.com`
    cannot sit beside `bob@x.com`: the unique constraint alone compares them case-sensitively."""

    def clean_email(self):
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        taken = User.objects.filter(email=email).exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError("A user with this email address already exists.")
        return email


class TaskFlowUserCreationForm(EmailFormMixin, UserCreationForm):
    class Meta:
        model = User
        fields = ("email", "full_name")


class TaskFlowUserChangeForm(EmailFormMixin, UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ("name", "prefix", "state", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("name", "prefix", "state", "created_at", "last_used_at", "revoked_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="state")
    def state(self, api_key):
        return "active" if api_key.is_active else "revoked"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = TaskFlowUserChangeForm
    add_form = TaskFlowUserCreationForm
    ordering = ("email",)
    list_display = ("email", "full_name", "is_staff", "is_active", "tasks_by_status", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")
    search_fields = ("email", "full_name")
    readonly_fields = ("date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("full_name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "full_name", "password1", "password2")}),)
    inlines = [ApiKeyInline]
    actions = ["revoke_all_api_keys"]

    class Media:
        css = {"all": ("tasks/admin.css",)}

    def get_changelist(self, request, **kwargs):
        return UserChangeList

    @admin.display(description="tasks by status")
    def tasks_by_status(self, user):
        counts = getattr(user, "task_counts", None)
        if counts is None:  # the change page: one user, one query
            counts = dict(Task.objects.filter(owner=user).values_list("status").annotate(n=Count("status")).order_by())
        if not counts:
            return "—"
        shown = [(status, TaskStatus(status).label, counts[status]) for status in TaskStatus.values if status in counts]
        return format_html_join(
            " ", '<span class="tf-status tf-status-{}" title="{}">{}</span>', ((s, label, n) for s, label, n in shown)
        )

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "tasks_by_status")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (*fieldsets, ("Tasks", {"fields": ("tasks_by_status",)}))

    @admin.action(description="Revoke all API keys of the selected users", permissions=["change"])
    def revoke_all_api_keys(self, request, queryset):
        revoked = revoke_api_keys(keys=ApiKey.objects.filter(user__in=queryset), actor=request.user)
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(KeyCheckingAutocompleteMixin, admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "user__email")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    actions = ["revoke_keys"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name")
        return ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("user", "prefix", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        api_key, raw_key = services.api_key_create(user=obj.user, name=obj.name)
        obj.pk = api_key.pk
        obj.refresh_from_db()
        messages.warning(request, f"The new API key is {raw_key} — copy it now, it will not be shown again.")

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = revoke_api_keys(keys=queryset, actor=request.user)
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


@admin.register(Quota)
class QuotaAdmin(KeyCheckingAutocompleteMixin, admin.ModelAdmin):
    """A user's own quotas; an empty figure is the default of settings.QUOTAS (shown beside it)."""

    list_display = ("user", "tasks_not_final_shown", "schedules_shown", "min_interval_shown", "endpoints_shown")
    search_fields = ("user__email",)
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    readonly_fields = ("updated_at",)

    def get_readonly_fields(self, request, obj=None):
        return ("user", "updated_at") if obj else ("updated_at",)

    def _figure(self, obj, name):
        own = getattr(obj, name)
        return f"{own:,}" if own is not None else f"default ({settings.QUOTAS[name]:,})"

    @admin.display(description="tasks not final")
    def tasks_not_final_shown(self, obj):
        return self._figure(obj, "tasks_not_final")

    @admin.display(description="schedules")
    def schedules_shown(self, obj):
        return self._figure(obj, "schedules")

    @admin.display(description="min. schedule interval (s)")
    def min_interval_shown(self, obj):
        return self._figure(obj, "schedule_min_interval_seconds")

    @admin.display(description="webhook endpoints")
    def endpoints_shown(self, obj):
        return self._figure(obj, "webhook_endpoints")

    def save_model(self, request, obj, form, change):
        with audited(
            user=request.user,
            action="quota.change" if change else "quota.add",
            object_type="accounts.quota",
            object_ids=[obj.pk],
            details={name: form.cleaned_data.get(name) for name in settings.QUOTAS},
        ):
            super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        with audited(user=request.user, action="quota.delete", object_type="accounts.quota", object_ids=[obj.pk]):
            super().delete_model(request, obj)
