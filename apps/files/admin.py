from django.contrib import admin
from django.db.models import Count
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import services
from .models import StoredFile


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    """Files are created through the API and services only: here staff look, download and delete."""

    list_display = (
        "original_name",
        "owner",
        "human_size",
        "content_type",
        "state",
        "used_by",
        "created_at",
        "download_link",
    )
    list_filter = ("state", "created_at")
    search_fields = ("original_name", "owner__email")
    list_select_related = ("owner",)
    show_full_result_count = False  # no second COUNT(*) over the whole table on every page
    fields = (
        "id",
        "owner",
        "original_name",
        "object_key",
        "human_size",
        "content_type",
        "sha256",
        "state",
        "created_at",
        "updated_at",
        "download_link",
        "tasks",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(task_count=Count("task_links__task", distinct=True))

    @admin.display(description="used by tasks", ordering="task_count")
    def used_by(self, stored_file):
        return stored_file.task_count

    @admin.display(description="tasks")
    def tasks(self, stored_file):
        links = stored_file.task_links.select_related("task").order_by("-created_at")[:50]
        if not links:
            return "—"
        return format_html_join(
            mark_safe("<br>"),
            '<a href="{}">{}</a> ({}, {})',
            (
                (reverse("admin:tasks_task_change", args=[link.task_id]), link.task.title, link.role, link.task.status)
                for link in links
            ),
        )

    @admin.display(description="size", ordering="size")
    def human_size(self, stored_file):
        return filesizeformat(stored_file.size)

    @admin.display(description="object key")
    def object_key(self, stored_file):
        return stored_file.file.name

    @admin.display(description="download")
    def download_link(self, stored_file):
        if not stored_file.is_ready:
            return "—"
        # The API's download checks permissions (staff see every file) and sets the headers.
        url = reverse("files:file-download", kwargs={"pk": stored_file.pk})
        return format_html('<a href="{}">Download</a>', url)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the change page is a read-only view

    def delete_model(self, request, obj):
        services.stored_file_delete(stored_file=obj)

    def delete_queryset(self, request, queryset):
        """The "Delete selected" action: remove each object from the store with its row."""
        for stored_file in queryset.iterator():
            services.stored_file_delete(stored_file=stored_file)
