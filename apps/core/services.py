"""Shared writes: the audit trail of staff actions."""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import transaction

from .models import AUDIT_MAX_IDS, AuditEntry

T = TypeVar("T")


def audit_record(
    *,
    user,
    action: str,
    reason: str = "",
    object_type: str,
    object_ids: Iterable = (),
    object_count: int | None = None,
    details: dict | None = None,
) -> AuditEntry:
    """Store one staff action. Keeps the first AUDIT_MAX_IDS ids; the count covers all of them.

    `object_count` defaults to the number of ids; pass it when the ids were not all loaded
    (a bulk action handed to the background). Use it alone only for work that was committed
    in transactions of its own (bulk batches); a write and its record go through `audited`.
    """
    ids = []
    seen = 0
    for object_id in object_ids:
        seen += 1
        if len(ids) < AUDIT_MAX_IDS:
            ids.append(str(object_id))
    return AuditEntry.objects.create(
        user=user if user is not None and user.is_authenticated else None,
        action=action,
        reason=reason,
        object_type=object_type,
        object_count=seen if object_count is None else object_count,
        object_ids=ids,
        details=details or {},
    )


class Audit:
    """The entry an `audited` block will store. The block fills in what its write decided
    (`object_ids`, `details`), may store it at once (`record`), or drop it (`discard`)."""

    def __init__(self, **fields):
        self.fields = fields
        self.entry: AuditEntry | None = None
        self.discarded = False

    def update(self, **fields) -> None:
        self.fields.update(fields)

    def record(self) -> AuditEntry:
        """Store the entry now, before the write, e.g. when the write also reaches outside the
        database (an object store, a broker): then it never happens without its record."""
        if self.entry is None:
            self.entry = audit_record(**self.fields)
        return self.entry

    def discard(self) -> None:
        """Nothing was done after all: no entry."""
        self.discarded = True


@contextmanager
def audited(
    *,
    user,
    action: str,
    object_type: str,
    object_ids: Iterable = (),
    reason: str = "",
    details: dict | None = None,
) -> Iterator[Audit]:
    """One transaction for a staff write and its AuditEntry: both are kept, or neither.

        with audited(user=request.user, action="task.retry", object_type="tasks.task") as audit:
            task = services.task_retry(task=task, actor=request.user, reason=reason)
            audit.update(object_ids=[task.pk], details={"status": task.status})

    The entry is stored when the block ends without an exception (unless the block already
    stored it with `audit.record()` or dropped it with `audit.discard()`).
    """
    audit = Audit(
        user=user, action=action, object_type=object_type, object_ids=object_ids, reason=reason, details=details
    )
    with transaction.atomic():
        yield audit
        if not audit.discarded:
            audit.record()


def audited_write(*, user, obj, action: str, write: Callable[[], T], reason: str = "") -> T:
    """Run `write` (a service call on `obj`); when a staff member makes it, audit it as the admin does.

    Both in one transaction: the write and its audit row are kept together or not at all.
    The row is written first, so a write that also changes something outside the database
    (an object store) never happens without it. Owners who are not staff are not audited.
    """
    if not (user.is_authenticated and user.is_staff):
        return write()
    with audited(
        user=user,
        action=action,
        reason=reason,
        object_type=obj._meta.label_lower,
        object_ids=[obj.pk],
        details={"via": "api", "owner": obj.owner_id},
    ) as audit:
        audit.record()
        return write()
