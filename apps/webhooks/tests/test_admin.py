import pytest
from django.utils import timezone

from apps.webhooks import services
from apps.webhooks.models import WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivery(owner, allow_local_webhooks, receiver):
    endpoint = services.endpoint_create(owner=owner, url=receiver.url, events=["task.succeeded"])
    delivery = WebhookDelivery.objects.create(
        owner=owner,
        endpoint=endpoint,
        url=endpoint.url,
        event="task.succeeded",
        body={},
        next_attempt_at=timezone.now(),
    )
    WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=500, error="HTTP 500")
    return delivery


def test_endpoint_changelist_search_and_change_page_hide_the_secret(client, staff, delivery):
    client.force_login(staff)
    response = client.get("/admin/webhooks/webhookendpoint/", {"q": "owner@example.com"})
    assert response.status_code == 200 and delivery.endpoint.url in response.content.decode()
    page = client.get(f"/admin/webhooks/webhookendpoint/{delivery.endpoint.pk}/change/").content.decode()
    assert delivery.endpoint.secret not in page


def test_delivery_change_page_lists_its_attempts(client, staff, delivery):
    client.force_login(staff)
    assert client.get("/admin/webhooks/webhookdelivery/", {"status": "pending"}).status_code == 200
    page = client.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "HTTP 500" in page


def test_the_redeliver_action_creates_a_new_delivery(client, staff, delivery):
    client.force_login(staff)
    response = client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "redeliver", "_selected_action": [str(delivery.pk)]},
        follow=True,
    )
    assert "Queued 1 redelivery" in response.content.decode()
    assert WebhookDelivery.objects.filter(redelivery_of=delivery).count() == 1


def test_non_staff_users_cannot_open_the_webhook_admin(client, owner, delivery):
    client.force_login(owner)
    response = client.get("/admin/webhooks/webhookdelivery/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
