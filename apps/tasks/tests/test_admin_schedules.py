import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django_celery_beat.models import PeriodicTask

from apps.core.models import AuditEntry
from apps.tasks.models import Schedule, Task
from apps.tasks.schedule_services import ScheduleSpec, schedule_create

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/schedule/"


@pytest.fixture
def schedule(owner):
    spec = ScheduleSpec(
        name="nightly", kind="demo.noop", payload={"echo": 1}, cron="30 2 * * *", timezone="Europe/Berlin"
    )
    return schedule_create(owner=owner, spec=spec)


def act(client, action, schedule, reason=""):
    return client.post(
        CHANGELIST, {"action": action, ACTION_CHECKBOX_NAME: [str(schedule.pk)], "reason": reason}, follow=True
    )


def test_the_schedule_list_shows_timing_in_words_and_searches(client, staff, schedule):
    client.force_login(staff)
    page = client.get(CHANGELIST, {"q": "owner@example"}).content.decode()
    assert "nightly" in page and "At 02:30 AM" in page and "Europe/Berlin" in page
    assert "nightly" not in client.get(CHANGELIST, {"q": "nobody"}).content.decode()


def test_the_change_page_previews_runs_and_lists_the_schedules_tasks(client, staff, schedule):
    from apps.tasks.schedule_services import schedule_run_now

    task = schedule_run_now(schedule=schedule, actor=staff)
    client.force_login(staff)
    page = client.get(f"{CHANGELIST}{schedule.pk}/change/").content.decode()
    assert "next runs" in page.lower() and "02:30:00+0" in page
    assert f"task/{task.pk}/change/" in page and "run_now" in page


def test_an_operator_runs_a_schedule_now_and_it_is_audited(client, operator, schedule):
    client.force_login(operator)
    response = act(client, "run_now", schedule, reason="customer asked")
    assert "Submitted 1 run(s)." in response.content.decode()
    task = Task.objects.get(schedule=schedule)
    assert (task.trigger, task.owner) == ("run_now", schedule.owner)
    entry = AuditEntry.objects.get(action="schedule.run_now")
    assert (entry.user, entry.reason, entry.object_ids) == (operator, "customer asked", [str(schedule.pk)])


def test_pause_with_a_reason_and_resume_follow_through_to_beat(client, operator, schedule):
    client.force_login(operator)
    act(client, "pause", schedule, reason="maintenance window")
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.paused_reason) == (False, "maintenance window")
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled is False
    act(client, "resume", schedule)
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.paused_reason) == (True, "")
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled is True


def test_a_viewer_cannot_run_or_pause_a_schedule_even_with_a_forged_post(client, viewer, schedule):
    client.force_login(viewer)
    page = client.get(CHANGELIST).content.decode()
    assert "run_now" not in page
    act(client, "run_now", schedule)
    act(client, "pause", schedule)
    schedule.refresh_from_db()
    assert schedule.enabled and not Task.objects.exists()


def test_staff_create_a_schedule_through_the_service_with_its_validation(client, staff, owner):
    client.force_login(staff)
    form = {
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
    }
    bad = client.post(f"{CHANGELIST}add/", {**form, "cron": "0 25 * * *"})
    assert bad.status_code == 200 and "Invalid hour field" in bad.content.decode()
    assert not Schedule.objects.exists()
    assert client.post(f"{CHANGELIST}add/", form).status_code == 302
    schedule = Schedule.objects.get(name="hourly")
    assert schedule.periodic_task.crontab.minute == "0" and schedule.next_run_at is not None
    assert AuditEntry.objects.filter(action="schedule.create").count() == 1
