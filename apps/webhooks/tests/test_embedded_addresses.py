"""IPv6 addresses that carry a refused IPv4 address are refused like it."""

import pytest
from django.utils import timezone

from apps.webhooks import services
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

EMBEDDING_A_REFUSED_IPV4 = {
    "6to4 of 127.0.0.1": ("2002:7f00:1::", "6to4 (embedding loopback 127.0.0.1)"),
    "6to4 of 127.0.0.1, zeros written": ("2002:7f00:0001::", "6to4 (embedding loopback 127.0.0.1)"),
    "6to4 of 10.0.0.1": ("2002:a00:1::5", "6to4 (embedding private 10.0.0.1)"),
    "6to4 of the metadata service": (
        "2002:a9fe:a9fe::",
        "6to4 (embedding link-local (cloud metadata) 169.254.169.254)",
    ),
    "Teredo to 127.0.0.1": ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo client (embedding loopback 127.0.0.1)"),
    "IPv4-mapped 127.0.0.1": ("::ffff:127.0.0.1", "loopback"),
    "IPv4-compatible 127.0.0.1": ("::127.0.0.1", "reserved"),
    "NAT64 of 127.0.0.1": ("64:ff9b::7f00:1", "reserved"),
    "NAT64 of 10.0.0.1": ("64:ff9b::a00:1", "reserved"),
}


@pytest.mark.parametrize(("address", "reason"), EMBEDDING_A_REFUSED_IPV4.values(), ids=EMBEDDING_A_REFUSED_IPV4.keys())
def test_registering_an_ipv6_literal_that_embeds_a_refused_ipv4_is_a_400(owner_api, address, reason):
    response = owner_api.post("/api/webhooks/", {"url": f"http://[{address}]:8080/hook"}, format="json")

    assert response.status_code == 400, response.content
    assert f"resolves to a {reason} address" in response.json()["error"]["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


def test_a_6to4_address_of_a_public_ipv4_is_not_refused(owner_api):
    from apps.webhooks.safety import check_url

    assert check_url("http://[2002:808:808::1]/hook").address == "2002:808:808::1"


@pytest.mark.parametrize("address", ["2002:7f00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe"])
def test_a_delivery_whose_host_resolves_to_an_embedded_loopback_is_refused_at_send_time(
    owner, allow_local_webhooks, receiver, address
):
    endpoint = services.endpoint_create(owner=owner, url=receiver.url, events=["task.succeeded"])
    delivery = WebhookDelivery.objects.create(
        owner=owner,
        endpoint=endpoint,
        url=f"http://[{address}]:{receiver.url.split(':')[2].split('/')[0]}/hook",
        event="task.succeeded",
        body={},
        next_attempt_at=timezone.now(),
    )

    services.delivery_send(delivery_id=delivery.pk)

    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.error.startswith(f"Refused: The host '{address}' resolves to a ")
    assert "(embedding loopback 127.0.0.1)" in attempt.error
    assert receiver.requests == []
