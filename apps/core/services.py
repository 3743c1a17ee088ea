"""Shared writes: the audit trail of staff actions."""

from collections.abc import Iterable

from .models import AUDIT_MAX_IDS, AuditEntry


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
