import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tasks.models import Task
from apps.webhooks import services, signing
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.support.callbacks import besides_live_notices
from tests.support.processes import wait_for

WEBHOOKS = "/api/webhooks/"
DELIVERIES = "/api/webhook-deliveries/"


def register(client, url, **data):
    return client.post(WEBHOOKS, {"url": url, **data}, format="json")


# --- Registration and safety --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback address (127.0.0.1)"),
        ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata) address"),
        ("http://10.0.0.1/hook", "private address (10.0.0.1)"),
        ("http://[::1]/hook", "loopback address (::1)"),
        ("http://localhost/hook", "loopback address"),
        ("file:///etc/passwd", "Only http:// and https:// URLs are allowed."),
        ("gopher://example.com/", "Only http:// and https://"),
        ("http://user:secret@93.184.216.34/hook", "Credentials in the URL are not allowed"),
    ],
)
def test_unsafe_urls_are_refused_with_a_clear_400(owner_api, url, reason):
    response = register(owner_api, url)
    assert response.status_code == 400
    assert reason in response.json()["error"]["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_an_allowed_local_host_registers_and_the_secret_is_shown_once(owner_api, allow_local_webhooks, receiver):
    response = register(owner_api, receiver.url, events=["task.failed"], description="ops")
    assert response.status_code == 201
    body = response.json()
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert body["secret"] == endpoint.secret and body["secret"].startswith("whsec_")
    assert body["events"] == ["task.failed"]
    assert "secret" not in owner_api.get(f"{WEBHOOKS}{endpoint.pk}/").json()
    assert "secret" not in owner_api.get(WEBHOOKS).json()["results"][0]
    rotated = owner_api.post(f"{WEBHOOKS}{endpoint.pk}/rotate-secret/").json()["secret"]
    endpoint.refresh_from_db()
    assert rotated == endpoint.secret != body["secret"]


@pytest.mark.django_db
def test_a_task_callback_url_is_checked_like_an_endpoint(owner_api):
    response = owner_api.post(
        "/api/tasks/", {"kind": "demo.noop", "callback_url": "http://169.254.169.254/"}, format="json"
    )
    assert response.status_code == 400
    assert "callback_url" in response.json()["error"]["fields"]
    assert not Task.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", ""), ("patch", ""), ("delete", ""), ("get", "deliveries/"), ("post", "rotate-secret/")],
)
def test_another_users_endpoint_is_a_404(owner_api, other_api, allow_local_webhooks, receiver, method, path):
    endpoint_id = register(owner_api, receiver.url).json()["id"]
    response = getattr(other_api, method)(f"{WEBHOOKS}{endpoint_id}/{path}", {}, format="json")
    assert response.status_code == 404
    assert WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).exists()


@pytest.mark.django_db
def test_the_url_is_checked_again_at_send_time(owner, settings, allow_local_webhooks, receiver):
    endpoint = services.endpoint_create(owner=owner, url=receiver.url, events=["task.succeeded"])
    delivery = WebhookDelivery.objects.create(
        owner=owner,
        endpoint=endpoint,
        url=endpoint.url,
        event="task.succeeded",
        body={},
        next_attempt_at=timezone.now(),
    )
    settings.WEBHOOK_ALLOWED_HOSTS = []  # as if the name now resolved somewhere internal
    services.delivery_send(delivery_id=delivery.pk)
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.error.startswith("Refused: The host '127.0.0.1' resolves to a loopback address")
    assert receiver.requests == []


# --- Delivery with a real worker ----------------------------------------------------------


def submit(client, **data):
    response = client.post("/api/tasks/", {"kind": "demo.noop", "payload": {"echo": "done"}, **data}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_succeeded_task_delivers_a_correctly_signed_body(owner_api, allow_local_webhooks, receiver, celery_worker):
    secret = register(owner_api, receiver.url, events=["task.succeeded"]).json()["secret"]
    task_id = submit(owner_api)
    wait_for(lambda: receiver.requests, timeout=30, message="the webhook POST")
    request = receiver.requests[0]
    headers, body = request["headers"], request["body"]
    assert signing.verify(secret, headers["taskflow-timestamp"], body, headers["taskflow-signature"])
    assert not signing.verify(
        secret, headers["taskflow-timestamp"], body.replace(b"done", b"DONE"), headers["taskflow-signature"]
    )
    assert not signing.verify("whsec_wrong", headers["taskflow-timestamp"], body, headers["taskflow-signature"])
    stale = str(int(headers["taskflow-timestamp"]) - 3600)
    assert not signing.verify(secret, stale, body, signing.sign(secret, int(stale), body))  # a replay
    payload = json.loads(body)
    assert payload["event"] == "task.succeeded"
    assert payload["task"]["id"] == task_id
    assert payload["task"]["result"] == {"echo": "done"}
    assert headers["taskflow-delivery"] == payload["id"]
    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(pk=payload["id"], status="succeeded").first(),
        message="the delivery to be recorded as succeeded",
    )
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [200]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_receiver_failing_twice_gets_three_attempts_with_growing_delays(
    owner_api, allow_local_webhooks, receiver, celery_worker
):
    receiver.script = [(500, 0), (500, 0), (200, 0)]
    register(owner_api, receiver.url)
    submit(owner_api)
    wait_for(lambda: len(receiver.requests) >= 3, timeout=30, message="three attempts")
    time.sleep(1)
    assert len(receiver.requests) == 3
    times = [r["at"] for r in receiver.requests]
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert 0.2 < first_gap < second_gap  # 0.5 s base: 0.25 to 0.5 s, then 0.5 to 1 s
    delivery = wait_for(lambda: WebhookDelivery.objects.filter(status="succeeded").first(), message="success")
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [500, 500, 200]
    assert delivery.attempts == 3


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_task_callback_url_is_signed_with_the_owners_callback_secret(
    owner_api, allow_local_webhooks, receiver, celery_worker
):
    secret = owner_api.get(f"{WEBHOOKS}callback-secret/").json()["secret"]
    task_id = submit(owner_api, callback_url=receiver.url)
    wait_for(lambda: receiver.requests, timeout=30, message="the callback POST")
    headers, body = receiver.requests[0]["headers"], receiver.requests[0]["body"]
    assert signing.verify(secret, headers["taskflow-timestamp"], body, headers["taskflow-signature"])
    assert json.loads(body)["task"]["id"] == task_id


# --- Retries, time-outs, giving up, redelivery (sent in-process) ----------------------------


@pytest.fixture
def pending_delivery(owner, allow_local_webhooks, receiver):
    endpoint = services.endpoint_create(owner=owner, url=receiver.url, events=["task.succeeded"])
    return WebhookDelivery.objects.create(
        owner=owner,
        endpoint=endpoint,
        url=endpoint.url,
        event="task.succeeded",
        body={"event": "task.succeeded"},
        next_attempt_at=timezone.now(),
    )


def make_due(delivery):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.django_db
def test_a_receiver_that_never_answers_times_out_and_is_retried(pending_delivery, receiver, settings):
    settings.WEBHOOK_TIMEOUT = 0.5
    receiver.script = [(200, 3)]
    started = time.monotonic()
    assert services.delivery_send(delivery_id=pending_delivery.pk) == "pending"
    assert time.monotonic() - started < 2.5
    attempt = WebhookAttempt.objects.get(delivery=pending_delivery)
    assert attempt.status_code is None and "ReadTimeoutError" in attempt.error
    pending_delivery.refresh_from_db()
    assert pending_delivery.next_attempt_at > timezone.now() - timedelta(seconds=1)


@pytest.mark.django_db
def test_giving_up_marks_the_delivery_failed_and_disables_a_failing_endpoint(pending_delivery, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    settings.WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES = 1
    receiver.script = [(503, 0)]
    assert services.delivery_send(delivery_id=pending_delivery.pk) == "pending"
    make_due(pending_delivery)
    assert services.delivery_send(delivery_id=pending_delivery.pk) == "failed"
    pending_delivery.refresh_from_db()
    assert (pending_delivery.attempts, pending_delivery.last_status_code) == (2, 503)
    assert pending_delivery.finished_at is not None
    endpoint = pending_delivery.endpoint
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason == "Disabled after 1 deliveries in a row failed."
    make_due(pending_delivery)
    assert services.delivery_send(delivery_id=pending_delivery.pk) is None  # a finished delivery is not re-sent
    assert len(receiver.requests) == 2


@pytest.mark.django_db
def test_no_redirect_is_followed(pending_delivery, receiver):
    receiver.script = [(302, 0)]
    services.delivery_send(delivery_id=pending_delivery.pk)
    assert len(receiver.requests) == 1
    assert WebhookAttempt.objects.get(delivery=pending_delivery).error == "HTTP 302"


@pytest.mark.django_db
def test_redeliver_sends_the_event_again_as_a_new_delivery(
    owner_api, other_api, pending_delivery, receiver, django_capture_on_commit_callbacks
):
    receiver.script = [(200, 0)]
    services.delivery_send(delivery_id=pending_delivery.pk)
    assert other_api.post(f"{DELIVERIES}{pending_delivery.pk}/redeliver/").status_code == 404
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_api.post(f"{DELIVERIES}{pending_delivery.pk}/redeliver/")
    assert response.status_code == 201
    copy = WebhookDelivery.objects.get(pk=response.json()["id"])
    assert copy.redelivery_of == pending_delivery and copy.body["id"] == str(copy.pk)
    assert len(besides_live_notices(callbacks)) == 1
    services.delivery_send(delivery_id=copy.pk)
    copy.refresh_from_db()
    assert copy.status == "succeeded" and len(receiver.requests) == 2
    listed = owner_api.get(f"{WEBHOOKS}{pending_delivery.endpoint_id}/deliveries/").json()["results"]
    assert {d["id"] for d in listed} == {str(pending_delivery.pk), str(copy.pk)}
    assert listed[0]["attempt_log"][0]["status_code"] == 200


@pytest.mark.django_db
def test_finishing_a_task_records_a_delivery_only_for_subscribed_events(owner, allow_local_webhooks, receiver):
    from apps.tasks import services as task_services

    services.endpoint_create(owner=owner, url=receiver.url, events=["task.failed"])
    succeeded = Task.objects.create(owner=owner, kind="demo.noop", status="queued")
    failed = Task.objects.create(owner=owner, kind="demo.fail", status="queued", max_retries=0)
    task_services.task_succeed(task=task_services.task_claim(task_id=succeeded.pk, worker="w"), result={})
    task_services.task_fail(task=task_services.task_claim(task_id=failed.pk, worker="w"), error="Boom")
    deliveries = list(WebhookDelivery.objects.all())
    assert [(d.task_id, d.event) for d in deliveries] == [(failed.pk, "task.failed")]
    assert deliveries[0].body["task"]["error"] == "Boom"


@pytest.mark.django_db
def test_the_due_sweep_queues_deliveries_whose_time_has_come(pending_delivery, django_capture_on_commit_callbacks):
    later = WebhookDelivery.objects.create(
        owner=pending_delivery.owner,
        url=pending_delivery.url,
        event="task.failed",
        body={},
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.send_due_deliveries() == 1
    assert len(besides_live_notices(callbacks)) == 1
    assert later.status == "pending"


@pytest.mark.django_db
def test_endpoints_past_the_quota_are_a_400_naming_it(owner_api, owner, settings):
    settings.QUOTAS = {**settings.QUOTAS, "webhook_endpoints": 2}
    assert [register(owner_api, f"https://93.184.216.34/{n}").status_code for n in range(2)] == [201, 201]
    refused = register(owner_api, "https://93.184.216.34/third")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["quota"], error["limit"], error["current"]) == (
        "quota_exceeded",
        "webhook_endpoints",
        2,
        2,
    )
    assert WebhookEndpoint.objects.filter(owner=owner).count() == 2
