"""Schedules take canonical IANA zone names only, and no cron field Celery would read oddly."""

import pytest
from django_celery_beat.models import PeriodicTask

from apps.tasks.models import Schedule

pytestmark = pytest.mark.django_db

SCHEDULES = "/api/schedules/"
ADMIN_ADD = "/admin/tasks/schedule/add/"

NON_CANONICAL_ZONES = [
    "localtime",
    "posixrules",
    "Factory",
    "right/UTC",
    "posix/Europe/Paris",
    "europe/paris",
    "../UTC",
    "Europe/../Europe/Paris",
]
ODD_CRONS = [
    "1-0 * * * *",
    "0 22-2 * * *",
    "0 0 * * fri-mon",
    "*/ * * * *",
    "1-5/ * * * *",
    "*/0 * * * *",
    "0 0 1,,2 * *",
]


def create(client, **data):
    body = {"name": "nightly", "kind": "demo.noop", "cron": "30 2 * * *", "timezone": "Europe/Berlin"} | data
    return client.post(SCHEDULES, body, format="json")


def admin_form(owner, **data) -> dict:
    return {
        "owner": owner.pk,
        "name": "hourly",
        "kind": "demo.noop",
        "payload": "{}",
        "cron": "0 * * * *",
        "interval_seconds": "",
        "timezone": "UTC",
        "priority": "normal",
        "enabled": "on",
        "overlap_policy": "allow",
    } | data


@pytest.mark.parametrize("zone", NON_CANONICAL_ZONES)
def test_a_non_canonical_time_zone_is_a_400_on_timezone(owner_api, zone):
    response = create(owner_api, timezone=zone)

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["timezone"]
    assert not Schedule.objects.exists() and not PeriodicTask.objects.filter(name__contains="nightly").exists()


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "America/Argentina/Buenos_Aires"])
def test_a_canonical_time_zone_is_accepted(owner_api, zone):
    assert create(owner_api, timezone=zone).status_code == 201


@pytest.mark.parametrize("expression", ODD_CRONS)
def test_a_backwards_range_or_an_empty_step_is_a_400_on_cron(owner_api, expression):
    response = create(owner_api, cron=expression)

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["cron"]
    assert not Schedule.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"), [("timezone", "localtime"), ("cron", "1-0 * * * *"), ("cron", "*/ * * * *")]
)
def test_the_admin_form_refuses_the_same(client, staff, owner, field, value):
    client.force_login(staff)

    response = client.post(ADMIN_ADD, admin_form(owner, **{field: value}))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field]
    assert not Schedule.objects.exists()
