"""Staff in the API as in the admin: another user's webhooks change only with the permission,
and every staff write is in the audit trail."""

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from apps.core.models import AuditEntry
from apps.webhooks import services
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from conftest import client_for

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/webhooks/"
DELIVERIES = "/api/webhook-deliveries/"


@pytest.fixture
def endpoint(owner, allow_local_webhooks):
    return services.endpoint_create(owner=owner, url="http://127.0.0.1:9/hooks/owner", events=["task.succeeded"])


@pytest.fixture
def delivery(owner, endpoint):
    return WebhookDelivery.objects.create(
        owner=owner,
        endpoint=endpoint,
        url=endpoint.url,
        event="task.succeeded",
        body={"event": "task.succeeded"},
        next_attempt_at=timezone.now(),
    )


@pytest.mark.parametrize("role", ["viewer", "operator"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("patch", "{pk}/", {"url": "http://127.0.0.1:9/hooks/attacker"}),
        ("post", "{pk}/rotate-secret/", {}),
        ("delete", "{pk}/", None),
    ],
)
def test_viewers_and_operators_cannot_repoint_rotate_or_delete_another_users_endpoint(
    request, endpoint, role, method, path, body
):
    before = model_to_dict(endpoint)
    client = client_for(request.getfixturevalue(role))
    response = getattr(client, method)(WEBHOOKS + path.format(pk=endpoint.pk), body, format="json")
    assert response.status_code == 403
    endpoint.refresh_from_db()
    assert model_to_dict(endpoint) == before  # the same url and secret
    assert not AuditEntry.objects.exists()


def test_a_viewer_can_still_read_another_users_endpoint_and_its_deliveries(viewer, endpoint, delivery):
    client = client_for(viewer)
    assert client.get(f"{WEBHOOKS}{endpoint.pk}/").status_code == 200
    assert client.get(f"{WEBHOOKS}{endpoint.pk}/deliveries/").status_code == 200
    assert client.get(f"{DELIVERIES}{delivery.pk}/").status_code == 200


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_viewers_and_operators_cannot_redeliver_another_users_delivery(request, delivery, role):
    response = client_for(request.getfixturevalue(role)).post(f"{DELIVERIES}{delivery.pk}/redeliver/")
    assert response.status_code == 403
    assert WebhookDelivery.objects.count() == 1
    assert not AuditEntry.objects.exists()


def test_a_superuser_repoints_and_rotates_another_users_endpoint_and_both_are_audited(superuser, owner, endpoint):
    client = client_for(superuser)
    url = "http://127.0.0.1:9/hooks/moved"
    assert client.patch(f"{WEBHOOKS}{endpoint.pk}/", {"url": url}, format="json").status_code == 200
    old_secret = WebhookEndpoint.objects.get(pk=endpoint.pk).secret
    response = client.post(f"{WEBHOOKS}{endpoint.pk}/rotate-secret/", {"reason": "leaked"}, format="json")
    assert response.status_code == 200
    endpoint.refresh_from_db()
    assert endpoint.url == url and endpoint.secret != old_secret
    entries = AuditEntry.objects.order_by("pk")
    assert [(e.user, e.action, e.reason, e.object_type, e.object_ids) for e in entries] == [
        (superuser, "webhook.change", "", "webhooks.webhookendpoint", [str(endpoint.pk)]),
        (superuser, "webhook.rotate_secret", "leaked", "webhooks.webhookendpoint", [str(endpoint.pk)]),
    ]
    assert all(e.details == {"via": "api", "owner": owner.pk} for e in entries)


def test_a_superuser_redelivers_another_users_delivery_and_it_is_audited(superuser, delivery):
    response = client_for(superuser).post(f"{DELIVERIES}{delivery.pk}/redeliver/", {"reason": "lost"}, format="json")
    assert response.status_code == 201
    assert WebhookDelivery.objects.get(pk=response.json()["id"]).redelivery_of == delivery
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.reason, entry.object_ids) == ("delivery.redeliver", "lost", [str(delivery.pk)])


def test_owners_change_their_own_endpoints_without_an_audit_entry(owner_api, endpoint):
    assert owner_api.patch(f"{WEBHOOKS}{endpoint.pk}/", {"description": "mine"}, format="json").status_code == 200
    assert owner_api.post(f"{WEBHOOKS}{endpoint.pk}/rotate-secret/").status_code == 200
    assert owner_api.delete(f"{WEBHOOKS}{endpoint.pk}/").status_code == 204
    assert not AuditEntry.objects.exists()
