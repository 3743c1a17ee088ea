"""The concurrency limits (ConcurrencyLimit) in the admin: Operators add, change and delete
them (live: claims everywhere apply an edit within a second), Viewers see them; the list
shows what each limit holds now. Writes go through limit_services (rules and audit)."""

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils import timezone
from django.utils.html import format_html

from apps.core.admin_errors import errors_on_form

from .. import limit_services, selectors
from ..models import ConcurrencyLimit, LimitScope
from ..registry import all_kinds
from .filters import OwnerSelect


class ConcurrencyLimitForm(forms.ModelForm):
    """The kind is picked from the registered kinds (a limit on a kind that left the registry
    keeps it until it is changed); limit_services.limit_clean checks each scope's fields."""

    kind = forms.CharField(
        required=False,
        max_length=100,
        widget=forms.Select,
        help_text="For the scope kind: the registered kind this limit counts.",
    )

    class Meta:
        model = ConcurrencyLimit
        fields = ["scope", "kind", "owner", "limit", "note"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", "—")] + [(kind.name, kind.name) for kind in all_kinds()]
        current = self.instance.kind
        if current and current not in dict(choices):
            choices.append((current, f"{current} (no longer registered)"))
        self.fields["kind"].widget.choices = choices

    def clean(self):
        cleaned = super().clean()
        if {"scope", "kind", "owner"} & set(self.errors):
            return cleaned
        with errors_on_form(self):
            limit_services.limit_clean(
                scope=cleaned.get("scope"),
                kind=cleaned.get("kind") or "",
                owner=cleaned.get("owner"),
                exclude_pk=self.instance.pk,
            )
        return cleaned


class LimitChangeList(ChangeList):
    """Attaches what the limits hold now (selectors.limits_overview: a few small queries for
    the whole page, not one per row)."""

    def get_results(self, request):
        super().get_results(request)
        self.overview = selectors.limits_overview(now=timezone.now())
        for limit in self.result_list:
            limit.use = _use_of(limit, self.overview)


def _use_of(limit: ConcurrencyLimit, overview: selectors.LimitsOverview) -> dict | None:
    """running / waiting of a limit's scope; for the default, of the owners at it."""
    if limit.scope == LimitScope.KIND:
        use = overview.kinds.get(limit.kind)
    elif limit.scope == LimitScope.OWNER:
        use = overview.owners.get(limit.owner_id)
    else:
        at_it = [use for use in overview.at_default if use.at_limit]
        waiting = sum(use.waiting for use in at_it)
        return {"owners_at_it": len(at_it), "waiting": f"{waiting:,}", "at_limit": bool(at_it)}
    if use is None:
        return None
    return {"running": use.running, "waiting": use.waiting_text, "at_limit": use.at_limit}


@admin.register(ConcurrencyLimit)
class ConcurrencyLimitAdmin(admin.ModelAdmin):
    form = ConcurrencyLimitForm
    list_display = (
        "scope_column",
        "kind",
        "owner_column",
        "limit",
        "running_column",
        "waiting_column",
        "note",
        "updated_at",
    )
    list_display_links = ("scope_column",)
    list_filter = ("scope",)
    search_fields = ("kind", "owner__email", "note")
    list_select_related = ("owner",)
    readonly_fields = ("updated_at",)

    class Media:
        css = {"all": ("tasks/admin.css",)}

    def get_changelist(self, request, **kwargs):
        return LimitChangeList

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":
            # The task list's owner autocomplete: Operators may not view users, but may pick one.
            kwargs["widget"] = OwnerSelect(db_field, self.admin_site)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="scope", ordering="scope")
    def scope_column(self, limit):
        return {LimitScope.KIND: "kind", LimitScope.OWNER: "owner", LimitScope.EVERY_OWNER: "each owner"}.get(
            limit.scope, limit.scope
        )

    @admin.display(description="owner", ordering="owner__email")
    def owner_column(self, limit):
        return limit.owner.email if limit.owner_id else "—"

    @admin.display(description="running now")
    def running_column(self, limit):
        use = getattr(limit, "use", None)
        if use is None:
            return "—"
        if "owners_at_it" in use:
            text = f"{use['owners_at_it']} owner(s) at it"
        else:
            text = f"{use['running']} / {limit.limit}"
        if use["at_limit"]:
            return format_html('{} <span class="tf-limit-flag">{}</span>', text, "held" if limit.limit == 0 else "full")
        return text

    @admin.display(description="waiting")
    def waiting_column(self, limit):
        """Queued (or retrying and due) tasks of the scope: they wait for a slot while it is full,
        else for a worker or their turn."""
        use = getattr(limit, "use", None)
        return "—" if use is None else use["waiting"]

    def save_model(self, request, obj, form, change):
        limit_services.limit_save(limit=obj, actor=request.user)

    def delete_model(self, request, obj):
        limit_services.limit_delete(limits=[obj], actor=request.user)

    def delete_queryset(self, request, queryset):
        limit_services.limit_delete(limits=queryset.select_related("owner"), actor=request.user)
