"""Webhook endpoints and deliveries: record when a task finishes, send, retry, give up."""

import logging
import random
import time
from datetime import datetime, timedelta

import urllib3
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.accounts.services import quota_check
from apps.core.exceptions import InvalidInput

from .models import (
    CallbackSecret,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    generate_secret,
)
from .safety import UnsafeUrl, check_url
from .signing import encode_body, sign

logger = logging.getLogger(__name__)

EVENT_FOR_STATUS = {
    "succeeded": WebhookEvent.TASK_SUCCEEDED,
    "failed": WebhookEvent.TASK_FAILED,
    "cancelled": WebhookEvent.TASK_CANCELLED,
}
USER_AGENT = "TaskFlow-Webhooks/1"
SNIPPET_BYTES = 1024
LOCK_SECONDS = 120


def _owner_flag_key(owner_id) -> str:
    return f"webhooks:has-endpoints:{owner_id}"


def forget_owner(owner_id) -> None:
    transaction.on_commit(lambda: cache.delete(_owner_flag_key(owner_id)))


def owner_has_endpoints(owner_id) -> bool:
    """Cached, so a finishing task whose owner has no endpoints costs no query."""
    key = _owner_flag_key(owner_id)
    flag = cache.get(key)
    if flag is None:
        flag = WebhookEndpoint.objects.filter(owner_id=owner_id, enabled=True).exists()
        # Invalidated on every endpoint change; a local-memory cache (embedded mode) is per
        # process, so there the answer is only trusted for a few seconds.
        cache.set(key, flag, timeout=300 if settings.REDIS_URL else 5)
    return flag


def validate_url(url: str) -> str:
    try:
        check_url(url)
    except UnsafeUrl as exc:
        raise InvalidInput(str(exc)) from None
    return url


# --- Endpoints ------------------------------------------------------------------------------


def endpoint_check_quota(owner) -> None:
    """Refuse one more endpoint past the owner's quota (QuotaExceeded)."""
    current = WebhookEndpoint.objects.filter(owner=owner).count()
    quota_check(owner, "webhook_endpoints", current=current, what="webhook endpoints")


def endpoint_create(*, owner, url: str, description: str = "", events: list[str], enabled: bool = True):
    validate_url(url)
    endpoint_check_quota(owner)
    endpoint = WebhookEndpoint.objects.create(
        owner=owner, url=url, description=description, events=sorted(set(events)), enabled=enabled
    )
    forget_owner(owner.pk)
    return endpoint


def endpoint_update(*, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    if "url" in changes:
        validate_url(changes["url"])
    if "events" in changes:
        changes["events"] = sorted(set(changes["events"]))
    for name, value in changes.items():
        setattr(endpoint, name, value)
    if changes.get("enabled"):
        endpoint.disabled_reason = ""
        endpoint.consecutive_failures = 0
    endpoint.save()
    forget_owner(endpoint.owner_id)
    return endpoint


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    owner_id = endpoint.owner_id
    endpoint.delete()
    forget_owner(owner_id)


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    endpoint.secret = generate_secret()
    endpoint.save(update_fields=["secret", "updated_at"])
    return endpoint


def callback_secret_for(owner) -> CallbackSecret:
    secret, _ = CallbackSecret.objects.get_or_create(owner=owner)
    return secret


def callback_secret_rotate(*, owner) -> CallbackSecret:
    secret = callback_secret_for(owner)
    secret.secret = generate_secret()
    secret.save(update_fields=["secret", "updated_at"])
    return secret


# --- Recording deliveries -------------------------------------------------------------------


def _task_body(task, event: str, delivery_id) -> dict:
    return {
        "id": str(delivery_id),
        "event": event,
        "created_at": timezone.now().isoformat(),
        "task": {
            "id": str(task.pk),
            "kind": task.kind,
            "title": task.title,
            "status": task.status,
            "attempts": task.attempts,
            "result": task.result,
            "error": task.error or None,
            "created_at": task.created_at.isoformat() if task.created_at else None,
            "started_at": task.started_at.isoformat() if task.started_at else None,
            "finished_at": task.finished_at.isoformat() if task.finished_at else None,
        },
    }


def record_task_deliveries(*, task) -> list[WebhookDelivery]:
    """Called inside the transaction that finishes a task, with the task as it left it: a final
    state always has its deliveries."""
    owner_id, callback_url = task.owner_id, task.callback_url
    if not callback_url and not owner_has_endpoints(owner_id):
        return []
    event = EVENT_FOR_STATUS.get(task.status)
    if event is None:
        return []
    targets = [
        (endpoint, endpoint.url)
        for endpoint in WebhookEndpoint.objects.filter(owner_id=owner_id, enabled=True)
        if event in endpoint.events
    ]
    if callback_url:
        targets.append((None, callback_url))
    deliveries = []
    for endpoint, url in targets:
        delivery = WebhookDelivery(owner_id=owner_id, endpoint=endpoint, task=task, url=url, event=event)
        delivery.body = _task_body(task, event, delivery.pk)
        delivery.next_attempt_at = timezone.now()
        deliveries.append(delivery)
    WebhookDelivery.objects.bulk_create(deliveries)
    _send_on_commit([d.pk for d in deliveries])
    return deliveries


def _send_on_commit(delivery_ids: list, countdown: float = 0) -> None:
    if not delivery_ids:
        return
    from .tasks import send_webhook

    def publish():
        for delivery_id in delivery_ids:
            try:
                send_webhook.apply_async(args=[str(delivery_id)], countdown=countdown)
            except Exception:
                logger.exception("could not queue webhook delivery %s; the sweep will send it", delivery_id)

    transaction.on_commit(publish)


def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send the same event again as a new delivery (the old one and its attempts stay)."""
    with transaction.atomic():
        copy = WebhookDelivery(
            owner_id=delivery.owner_id,
            endpoint=delivery.endpoint,
            task_id=delivery.task_id,
            redelivery_of=delivery,
            url=delivery.endpoint.url if delivery.endpoint else delivery.url,
            event=delivery.event,
            next_attempt_at=timezone.now(),
        )
        copy.body = {**delivery.body, "id": str(copy.pk)}
        copy.save(force_insert=True)
        _send_on_commit([copy.pk])
    return copy


# --- Sending --------------------------------------------------------------------------------


def retry_delay(attempt: int) -> float:
    """Exponential with equal jitter: WEBHOOK_RETRY_BASE·2^(n-1), capped at six hours."""
    cap = min(settings.WEBHOOK_RETRY_BASE * 2 ** (attempt - 1), 6 * 3600)
    return cap / 2 + random.uniform(0, cap / 2)


def _secret_for(delivery: WebhookDelivery) -> str:
    if delivery.endpoint_id:
        return delivery.endpoint.secret
    return callback_secret_for(delivery.owner).secret


def _post(delivery: WebhookDelivery, body: bytes, headers: dict) -> tuple[int, bytes]:
    """POST to the checked address; never follows redirects; reads a capped response."""
    target = check_url(delivery.url)
    timeout = urllib3.Timeout(connect=settings.WEBHOOK_TIMEOUT, read=settings.WEBHOOK_TIMEOUT)
    options = {"port": target.port, "timeout": timeout, "retries": False, "maxsize": 1}
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address, server_hostname=target.host, assert_hostname=target.host, **options
        )
    else:
        pool = urllib3.HTTPConnectionPool(target.address, **options)
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": host_header},
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            snippet = response.read(SNIPPET_BYTES, decode_content=False)
        finally:
            response.release_conn()
        return response.status, snippet
    finally:
        pool.close()


def _lock_free(now) -> Q:
    return Q(locked_until__isnull=True) | Q(locked_until__lt=now)


def _claim(delivery_id, now: datetime) -> WebhookDelivery | None:
    claimed = WebhookDelivery.objects.filter(_lock_free(now), pk=delivery_id, status=DeliveryStatus.PENDING).update(
        locked_until=now + timedelta(seconds=LOCK_SECONDS)
    )
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("endpoint", "owner").get(pk=delivery_id)


def delivery_send(*, delivery_id) -> str | None:
    """Make one attempt at a pending delivery. Returns its status afterwards, or None if busy."""
    now = timezone.now()
    delivery = _claim(delivery_id, now)
    if delivery is None:
        return None
    if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(seconds=1):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(locked_until=None)
        return delivery.status  # early: the sweep or a countdown message will come back
    number = delivery.attempts + 1
    timestamp = int(time.time())
    body = encode_body(delivery.body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "TaskFlow-Delivery": str(delivery.pk),
        "TaskFlow-Event": delivery.event,
        "TaskFlow-Timestamp": str(timestamp),
        "TaskFlow-Signature": sign(_secret_for(delivery), timestamp, body),
    }
    started = time.monotonic()
    status_code, snippet, error = None, b"", ""
    try:
        status_code, snippet = _post(delivery, body, headers)
    except UnsafeUrl as exc:
        error = f"Refused: {exc}"
    except urllib3.exceptions.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = int((time.monotonic() - started) * 1000)
    ok = status_code is not None and 200 <= status_code < 300
    if status_code is not None and not ok:
        error = f"HTTP {status_code}"
    _record_attempt(delivery, number, status_code, duration_ms, snippet.decode(errors="replace"), error, ok)
    return delivery.status


def _record_attempt(delivery, number, status_code, duration_ms, snippet, error, ok) -> None:
    now = timezone.now()
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            status_code=status_code,
            duration_ms=duration_ms,
            response_snippet=snippet,
            error=error,
        )
        delivery.attempts = number
        delivery.last_status_code = status_code
        delivery.last_error = error
        delivery.locked_until = None
        if ok:
            delivery.status, delivery.finished_at, delivery.next_attempt_at = DeliveryStatus.SUCCEEDED, now, None
        elif number >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status, delivery.finished_at, delivery.next_attempt_at = DeliveryStatus.FAILED, now, None
        else:
            delay = retry_delay(number)
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            if delay <= 60:
                _send_on_commit([delivery.pk], countdown=delay)
        delivery.save()
        if delivery.endpoint_id:
            _count_endpoint_outcome(delivery.endpoint, ok=ok, gave_up=delivery.status == DeliveryStatus.FAILED)


def _count_endpoint_outcome(endpoint: WebhookEndpoint, *, ok: bool, gave_up: bool) -> None:
    if ok:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0)
        return
    if not gave_up:
        return
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    endpoint.refresh_from_db(fields=["consecutive_failures"])
    limit = settings.WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES
    if endpoint.consecutive_failures >= limit and endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_reason = f"Disabled after {limit} deliveries in a row failed."
        endpoint.save(update_fields=["enabled", "disabled_reason", "updated_at"])
        forget_owner(endpoint.owner_id)
        logger.warning("webhook endpoint %s disabled after %d failed deliveries", endpoint.pk, limit)


def send_due_deliveries(*, now: datetime | None = None) -> int:
    """Sweep: queue pending deliveries whose time has come (long backoffs, lost messages)."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            _lock_free(now), status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).values_list("pk", flat=True)[:500]
    )
    with transaction.atomic():
        _send_on_commit(due)
    return len(due)
