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


ENDPOINTS = "/admin/webhooks/webhookendpoint/"


def endpoint_form(owner, url):
    return {"owner": owner.pk, "url": url, "description": "", "events": '["task.succeeded"]', "enabled": "on"}


def test_the_admin_refuses_an_endpoint_the_api_refuses(client, staff, owner, settings):
    client.force_login(staff)
    private = client.post(f"{ENDPOINTS}add/", endpoint_form(owner, "http://10.0.0.1/hook"))
    assert private.status_code == 200 and "private address (10.0.0.1)" in private.content.decode()
    settings.QUOTAS = {**settings.QUOTAS, "webhook_endpoints": 1}
    services.endpoint_create(owner=owner, url="https://93.184.216.34/one", events=["task.succeeded"])
    over = client.post(f"{ENDPOINTS}add/", endpoint_form(owner, "https://93.184.216.34/two"))
    assert (
        over.status_code == 200 and "Quota reached for webhook endpoints: at most 1 per user" in over.content.decode()
    )
    assert owner.webhook_endpoints.count() == 1


def test_an_endpoint_added_in_the_admin_gets_its_owners_deliveries_at_once(
    client, staff, owner, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    assert services.owner_has_endpoints(owner.pk) is False  # cached: this owner has none
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{ENDPOINTS}add/", endpoint_form(owner, "https://93.184.216.34/hook"))
    assert response.status_code == 302
    assert services.owner_has_endpoints(owner.pk) is True
