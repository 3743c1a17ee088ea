"""ETags for the task detail, so that clients can poll a task cheaply (If-None-Match -> 304).

The tag is computed from a few scalar columns in one small query, never by serializing the
task, and the task itself is never cached: an unchanged tag means an unchanged task.
"""

import hashlib
import uuid

from django.db.models import Count, Max

from .models import Task

# Bump when the detail representation changes shape, so that clients drop their copies.
REPRESENTATION_VERSION = "1"


def task_etag(*, user, task_id) -> str | None:
    """A weak ETag for the detail of a task `user` may see, or None (the view then answers 404).

    The sweeps (dispatcher, reaper) stamp updated_at themselves; status, attempts, queued_at,
    run_at and finished_at stay in the tag as a second guard, and so do the file links (an
    output file is linked while the task runs without touching the task row).
    """
    try:
        uuid.UUID(str(task_id))
    except ValueError:
        return None  # not a task id: the view's 404
    row = (
        Task.objects.visible_to(user)
        .filter(pk=task_id)
        .annotate(file_links_count=Count("file_links"), last_file_link=Max("file_links__id"))
        .values_list(
            "id",
            "updated_at",
            "status",
            "attempts",
            "queued_at",
            "run_at",
            "finished_at",
            "file_links_count",
            "last_file_link",
        )
        .first()
    )
    if row is None:
        return None
    digest = hashlib.blake2b(repr((REPRESENTATION_VERSION, *row)).encode(), digest_size=16).hexdigest()
    return f'W/"{digest}"'


def task_detail_etag(request, pk=None, **kwargs) -> str | None:
    """The etag_func of django.views.decorators.http.condition for the task detail view."""
    return task_etag(user=request.user, task_id=pk)
