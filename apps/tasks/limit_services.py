"""Writes of the concurrency limits (ConcurrencyLimit), each with its AuditEntry, and the rules
a limit must meet, checked before the database's constraints would refuse it, in words an
operator can act on.

Limits are operators' configuration, edited in the admin (admin/limits.py); the claim reads
them (fairness.py) and a saved limit wakes what it now has room for (apps.py's signal).
"""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import transaction

from apps.core.exceptions import InvalidInput
from apps.core.services import audited

from . import dashboard
from .models import ConcurrencyLimit, LimitScope
from .registry import all_kinds, get_kind

# An unknown kind is quoted at most this long in its error.
KIND_SHOWN = 100
AUDIT_TYPE = "tasks.concurrencylimit"


def limit_save(*, limit: ConcurrencyLimit, actor, reason: str = "") -> ConcurrencyLimit:
    """Store a new or changed limit (checked by limit_clean) and its AuditEntry, with the
    figures before and after, in one transaction. Claims everywhere apply it within
    fairness.LIMITS_SEEN_FOR; more room wakes waiting tasks at once (on commit)."""
    limit_clean(scope=limit.scope, kind=limit.kind, owner=limit.owner, exclude_pk=limit.pk)
    before = None
    if limit.pk is not None:
        before = ConcurrencyLimit.objects.select_related("owner").filter(pk=limit.pk).first()
    action = "concurrency_limit.change" if before else "concurrency_limit.add"
    with audited(user=actor, action=action, reason=reason, object_type=AUDIT_TYPE) as audit:
        limit.save()
        details = limit_details(limit)
        if before is not None:
            details["before"] = limit_details(before)
        audit.update(object_ids=[limit.pk], details=details)
        transaction.on_commit(dashboard.forget_dashboard_limits)
    return limit


def limit_delete(*, limits: Iterable[ConcurrencyLimit], actor, reason: str = "") -> int:
    """Remove limits, with one AuditEntry naming each; their scopes' waiting tasks are woken."""
    limits = list(limits)
    if not limits:
        return 0
    with audited(
        user=actor,
        action="concurrency_limit.delete",
        reason=reason,
        object_type=AUDIT_TYPE,
        object_ids=[limit.pk for limit in limits],
        details={"removed": [limit_details(limit) for limit in limits]},
    ) as audit:
        audit.record()  # while the ids are still the limits'
        for limit in limits:
            limit.delete()
        transaction.on_commit(dashboard.forget_dashboard_limits)
    return len(limits)


def limit_clean(*, scope: str, kind: str, owner, exclude_pk=None) -> None:
    """Refuse (InvalidInput, by field) a limit whose fields do not fit its scope, whose kind is
    not registered, or whose scope already has a limit. `exclude_pk`: the limit being changed,
    which may keep a kind that is no longer registered (so it can still be changed)."""
    errors = {}
    if scope == LimitScope.KIND:
        if not kind:
            errors["kind"] = "Choose the kind this limit is for."
        elif get_kind(kind) is None and not _keeps_kind(exclude_pk, kind):
            known = ", ".join(registered.name for registered in all_kinds())
            shown = kind if len(kind) <= KIND_SHOWN else kind[:KIND_SHOWN] + "…"
            errors["kind"] = f"Unknown kind {shown!r}. Registered kinds: {known}."
        if owner is not None:
            errors["owner"] = "A kind's limit counts every owner's tasks: leave the owner empty."
    elif scope == LimitScope.OWNER:
        if owner is None:
            errors["owner"] = "Choose the owner this limit is for."
        if kind:
            errors["kind"] = "An owner's limit counts all their kinds: leave the kind empty."
    elif scope == LimitScope.EVERY_OWNER:
        if kind:
            errors["kind"] = "The default for each owner counts all kinds: leave the kind empty."
        if owner is not None:
            errors["owner"] = "The default applies to each owner: leave the owner empty (or choose the scope owner)."
    else:
        errors["scope"] = f"Choose one of: {', '.join(LimitScope.values)}."
    if not errors:
        errors = _taken(scope=scope, kind=kind, owner=owner, exclude_pk=exclude_pk)
    if errors:
        raise InvalidInput({name: [message] for name, message in errors.items()})


def _keeps_kind(limit_pk, kind: str) -> bool:
    return limit_pk is not None and ConcurrencyLimit.objects.filter(pk=limit_pk, kind=kind).exists()


def _taken(*, scope: str, kind: str, owner, exclude_pk) -> dict[str, str]:
    """The scope's existing limit, named in the error of the field that picks the scope."""
    others = ConcurrencyLimit.objects.exclude(pk=exclude_pk) if exclude_pk is not None else ConcurrencyLimit.objects
    if scope == LimitScope.KIND:
        existing = others.filter(scope=scope, kind=kind).first()
        field, what = "kind", f"kind {kind}"
    elif scope == LimitScope.OWNER:
        existing = others.filter(scope=scope, owner=owner).first()
        field, what = "owner", _email(owner)
    else:
        existing = others.filter(scope=scope).first()
        field, what = "scope", "each owner (the default)"
    if existing is None:
        return {}
    return {field: f"There is already a limit for {what} ({existing.limit} at once): change that one instead."}


def _email(owner) -> str:
    if isinstance(owner, get_user_model()):
        return owner.email
    return f"user {owner}"


def limit_details(limit: ConcurrencyLimit) -> dict:
    """What the audit trail records of a limit (before and after a change)."""
    return {
        "scope": limit.scope,
        "kind": limit.kind,
        "owner": limit.owner.email if limit.owner_id else None,
        "limit": limit.limit,
        "note": limit.note,
    }
