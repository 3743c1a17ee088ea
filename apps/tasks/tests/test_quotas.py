"""Quotas per owner: tasks not yet final (429), schedules and their minimum interval (400)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import Quota
from apps.tasks.models import Schedule, Task, TaskStatus
from apps.tasks.schedule_services import ScheduleSpec, schedule_create, schedule_fire

pytestmark = pytest.mark.django_db

TASKS, BULK, SCHEDULES = "/api/tasks/", "/api/tasks/bulk/", "/api/schedules/"
NOOP = {"kind": "demo.noop", "payload": {"echo": 1}}


@pytest.fixture
def small_quotas(settings):
    settings.QUOTAS = {**settings.QUOTAS, "tasks_not_final": 3, "schedules": 2, "schedule_min_interval_seconds": 60}
    return settings.QUOTAS


def submit(client, **extra):
    return client.post(TASKS, NOOP | extra, format="json")


def test_a_submission_past_the_quota_is_a_429_naming_it_and_writes_nothing(owner_api, owner, small_quotas):
    assert [submit(owner_api).status_code for _ in range(3)] == [201, 201, 201]
    refused = submit(owner_api)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert (error["quota"], error["limit"], error["current"]) == ("tasks_not_final", 3, 3)
    assert error["message"] == "Quota reached for tasks not yet final: at most 3 per user; you have 3."
    assert Task.objects.filter(owner=owner).count() == 3


def test_a_bulk_submission_past_the_quota_is_refused_whole(owner_api, owner, small_quotas):
    assert submit(owner_api).status_code == 201
    refused = owner_api.post(BULK, {"tasks": [NOOP, NOOP, NOOP]}, format="json")
    assert refused.status_code == 429
    assert refused.json()["error"]["current"] == 1
    assert Task.objects.filter(owner=owner).count() == 1
    assert owner_api.post(BULK, {"tasks": [NOOP, NOOP]}, format="json").status_code == 201


def test_finished_tasks_make_room_again_and_other_owners_are_not_counted(owner_api, other_api, owner, small_quotas):
    for _ in range(3):
        assert submit(owner_api).status_code == 201
    assert submit(owner_api).status_code == 429
    assert submit(other_api).status_code == 201  # another owner's quota is their own
    # Two of the owner's tasks finish (succeeded, cancelled): the next submissions are counted
    # exactly again, not from the bound kept since.
    done = list(Task.objects.filter(owner=owner).values_list("pk", flat=True)[:2])
    Task.objects.filter(pk=done[0]).update(status=TaskStatus.SUCCEEDED)
    Task.objects.filter(pk=done[1]).update(status=TaskStatus.CANCELLED)
    assert [submit(owner_api).status_code for _ in range(3)] == [201, 201, 429]


def test_running_and_retrying_tasks_count_as_not_final(owner_api, owner, small_quotas):
    for _ in range(3):
        assert submit(owner_api).status_code == 201
    first, second, third = Task.objects.filter(owner=owner)
    Task.objects.filter(pk=first.pk).update(status=TaskStatus.RUNNING)
    Task.objects.filter(pk=second.pk).update(status=TaskStatus.RETRYING)
    Task.objects.filter(pk=third.pk).update(status=TaskStatus.PENDING)
    assert submit(owner_api).status_code == 429


def test_an_idempotent_replay_past_the_quota_returns_the_first_task(owner_api, small_quotas):
    first = submit(owner_api, idempotency_key="order-1")
    for _ in range(2):
        submit(owner_api)
    replay = submit(owner_api, idempotency_key="order-1")
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]


def test_staff_raise_one_users_quota_and_it_applies_at_once(owner_api, owner, small_quotas):
    for _ in range(3):
        submit(owner_api)
    assert submit(owner_api).status_code == 429
    quota = Quota.objects.create(user=owner, tasks_not_final=5)  # the cached figures are dropped
    assert [submit(owner_api).status_code for _ in range(3)] == [201, 201, 429]
    assert submit(owner_api).json()["error"]["limit"] == 5
    quota.tasks_not_final = None  # back to the default
    quota.save()
    assert submit(owner_api).json()["error"]["limit"] == 3


def test_staff_lower_one_users_quota_below_the_kept_headroom_and_it_applies_at_once(owner_api, owner, small_quotas):
    # One accepted task leaves a headroom of two under the default of three.
    assert submit(owner_api).status_code == 201
    Quota.objects.create(user=owner, tasks_not_final=1)  # drops the headroom as well
    refused = submit(owner_api)
    assert refused.status_code == 429
    assert (refused.json()["error"]["limit"], refused.json()["error"]["current"]) == (1, 1)
    Quota.objects.filter(user=owner).delete()  # through the queryset: post_delete still fires
    assert [submit(owner_api).status_code for _ in range(3)] == [201, 201, 429]


def test_a_lower_default_quota_applies_to_the_next_submission(owner_api, owner, settings, small_quotas):
    assert submit(owner_api).status_code == 201  # a headroom of two kept under the default of three
    settings.QUOTAS = {**settings.QUOTAS, "tasks_not_final": 1}
    refused = submit(owner_api)
    assert refused.status_code == 429 and refused.json()["error"]["limit"] == 1
    assert Task.objects.filter(owner=owner).count() == 1


def test_run_now_past_the_quota_is_a_429(owner_api, owner, small_quotas):
    schedule = schedule_create(
        owner=owner, spec=ScheduleSpec(name="hourly", kind="demo.noop", payload={}, cron="0 * * * *")
    )
    for _ in range(3):
        submit(owner_api)
    response = owner_api.post(f"{SCHEDULES}{schedule.pk}/run/", {}, format="json")
    assert response.status_code == 429 and response.json()["error"]["quota"] == "tasks_not_final"


def test_a_scheduled_run_past_the_quota_is_skipped_and_counted(owner, small_quotas):
    schedule = schedule_create(
        owner=owner, spec=ScheduleSpec(name="hourly", kind="demo.noop", payload={}, cron="0 * * * *")
    )
    Task.objects.bulk_create(
        [Task(owner=owner, kind="demo.noop", payload={}, status=TaskStatus.QUEUED) for _ in range(3)]
    )
    assert schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at) is None
    schedule.refresh_from_db()
    assert schedule.skipped_runs == 1
    assert schedule.next_run_at > schedule.last_fired_at  # the next run comes as usual
    assert not Task.objects.filter(schedule=schedule).exists()


# --- Schedules ---------------------------------------------------------------------------------


def create_schedule(client, name="nightly", **timing):
    body = {"name": name, "kind": "demo.noop", **(timing or {"cron": "30 2 * * *"})}
    return client.post(SCHEDULES, body, format="json")


def test_schedules_past_the_quota_are_a_400_naming_it(owner_api, owner, small_quotas):
    assert create_schedule(owner_api, "a").status_code == 201
    assert create_schedule(owner_api, "b").status_code == 201
    refused = create_schedule(owner_api, "c")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["quota"], error["limit"], error["current"]) == ("quota_exceeded", "schedules", 2, 2)
    assert Schedule.objects.filter(owner=owner).count() == 2
    # Changing a schedule the owner already has is not a new one.
    schedule = Schedule.objects.get(name="a")
    changed = owner_api.patch(f"{SCHEDULES}{schedule.pk}/", {"cron": "0 3 * * *"}, format="json")
    assert changed.status_code == 200


@pytest.mark.parametrize(
    ("timing", "gap"),
    [
        ({"interval_seconds": 30}, 30),
        ({"cron": "0,1 * * * *"}, 60),  # one minute apart once an hour: the shortest gap counts
    ],
)
def test_a_schedule_running_more_often_than_the_minimum_is_a_400(owner_api, settings, timing, gap):
    settings.QUOTAS = {**settings.QUOTAS, "schedule_min_interval_seconds": 120}
    refused = create_schedule(owner_api, **timing)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["quota"], error["limit"], error["current"]) == ("schedule_min_interval_seconds", 120, gap)
    assert create_schedule(owner_api, interval_seconds=120).status_code == 201
    assert create_schedule(owner_api, "hourly", cron="0 * * * *").status_code == 201


def test_staff_owners_have_no_minimum_interval_and_a_users_own_figure_applies(
    staff_api, owner_api, owner, small_quotas
):
    assert create_schedule(staff_api, interval_seconds=5).status_code == 201
    assert create_schedule(owner_api, interval_seconds=5).status_code == 400
    Quota.objects.create(user=owner, schedule_min_interval_seconds=5)
    assert create_schedule(owner_api, interval_seconds=5).status_code == 201


def test_a_schedule_whose_timing_is_unchanged_can_still_be_edited_after_the_minimum_rose(owner_api, owner, settings):
    schedule = schedule_create(
        owner=owner, spec=ScheduleSpec(name="often", kind="demo.noop", payload={}, interval_seconds=60)
    )
    settings.QUOTAS = {**settings.QUOTAS, "schedule_min_interval_seconds": 600}
    renamed = owner_api.patch(f"{SCHEDULES}{schedule.pk}/", {"name": "renamed"}, format="json")
    assert renamed.status_code == 200
    faster = owner_api.patch(f"{SCHEDULES}{schedule.pk}/", {"interval_seconds": 120}, format="json")
    assert faster.status_code == 400 and faster.json()["error"]["quota"] == "schedule_min_interval_seconds"
    schedule.refresh_from_db()
    assert schedule.interval_seconds == 60 and schedule.next_run_at < timezone.now() + timedelta(seconds=61)
