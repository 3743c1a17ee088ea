"""Shared writes: the audit trail of staff actions."""

from collections.abc import Callable, Iterable
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
    (a bulk action handed to the background).
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


def audited_write(*, user, obj, action: str, write: Callable[[], T], reason: str = "") -> T:
    """Run `write` (a service call on `obj`); when a staff member makes it, audit it as the admin does.

    Both in one transaction: the write and its audit row are kept together or not at all.
    The row is written first, so a write that also changes something outside the database
    (an object store) never happens without it. Owners who are not staff are not audited.
    """
    if not (user.is_authenticated and user.is_staff):
        return write()
    with transaction.atomic():
        audit_record(
            user=user,
            action=action,
            reason=reason,
            object_type=obj._meta.label_lower,
            object_ids=[obj.pk],
            details={"via": "api", "owner": obj.owner_id},
        )
        return write()
