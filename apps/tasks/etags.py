"""ETags for the task detail, so that clients can poll a task cheaply (If-None-Match -> 304).

The tag is computed from a few scalar columns in one small query, never by serializing the
task, and the task itself is never cached: an unchanged tag means an unchanged task. A
claimable task's waiting reason (fairness.waiting_reason) depends on other tasks and on the
limits, so it is read in the same query (fairness.with_limit_use) and goes into the tag.
"""

import hashlib
import uuid

from django.db.models import Count, Max

from . import fairness
from .models import Task

# Bump when the detail representation changes shape, so that clients drop their copies.
REPRESENTATION_VERSION = "2"  # 2: the detail's waiting_for


TAGGED_FIELDS = (
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
    tasks = Task.objects.visible_to(user).filter(pk=task_id)
    row = (
        fairness.with_limit_use(tasks)
        .annotate(file_links_count=Count("file_links"), last_file_link=Max("file_links__id"))
        .values(*TAGGED_FIELDS, "kind", *fairness.LIMIT_USE_FIELDS)
        .first()
    )
    if row is None:
        return None
    waiting = fairness.describe_wait(kind=row["kind"], status=row["status"], run_at=row["run_at"], use=row)
    shown = [row[name] for name in TAGGED_FIELDS]
    digest = hashlib.blake2b(repr((REPRESENTATION_VERSION, *shown, waiting)).encode(), digest_size=16).hexdigest()
    return f'W/"{digest}"'


def task_detail_etag(request, pk=None, **kwargs) -> str | None:
    """The etag_func of django.views.decorators.http.condition for the task detail view."""
    return task_etag(user=request.user, task_id=pk)
