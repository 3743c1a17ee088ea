from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.tasks import cron
from apps.tasks.models import Schedule, Task, TaskStatus
from apps.tasks.schedule_services import ScheduleSpec, schedule_create, schedule_fire, schedule_preview
from tests.support.callbacks import besides_live_notices

pytestmark = pytest.mark.django_db

SCHEDULES = "/api/schedules/"


def create(client, **data):
    body = {"name": "nightly", "kind": "demo.noop", "cron": "30 2 * * *", "timezone": "Europe/Berlin"} | data
    return client.post(SCHEDULES, body, format="json")


def make_schedule(owner, **fields) -> Schedule:
    spec = ScheduleSpec(**({"name": "every-minute", "kind": "demo.noop", "payload": {}, "cron": "* * * * *"} | fields))
    return schedule_create(owner=owner, spec=spec)


# --- Validation and the beat mirror ---------------------------------------------------------


def test_creating_a_schedule_mirrors_it_into_beat(owner_api, owner):
    response = create(owner_api, payload={"echo": "hi"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["cron_description"] == "At 02:30 AM"
    schedule = Schedule.objects.get(pk=body["id"])
    periodic = schedule.periodic_task
    assert periodic.task == "taskflow.fire_schedule"
    assert periodic.enabled
    assert (periodic.crontab.minute, periodic.crontab.hour, str(periodic.crontab.timezone)) == (
        "30",
        "2",
        "Europe/Berlin",
    )
    assert str(schedule.pk) in periodic.kwargs
    assert schedule.next_run_at.astimezone(cron.parse_zone("Europe/Berlin")).strftime("%H:%M") in ("02:30", "03:30")


def test_a_bad_cron_expression_says_which_field_is_wrong(owner_api):
    response = create(owner_api, cron="61 * * * *")
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["cron"][0]
    assert message.startswith("Invalid minute field '61'")
    assert not Schedule.objects.exists() and not PeriodicTask.objects.filter(task="taskflow.fire_schedule").exists()


def test_a_cron_expression_needs_five_fields(owner_api):
    response = create(owner_api, cron="30 2 * *")
    assert "has 5 fields" in response.json()["error"]["fields"]["cron"][0]


def test_an_unknown_time_zone_is_a_400(owner_api):
    response = create(owner_api, timezone="Mars/Olympus_Mons")
    assert response.status_code == 400
    assert "Unknown time zone 'Mars/Olympus_Mons'" in response.json()["error"]["fields"]["timezone"][0]


def test_cron_and_interval_are_mutually_exclusive(owner_api):
    response = create(owner_api, interval_seconds=60)
    assert response.status_code == 400
    assert "either a cron expression or interval_seconds" in response.json()["error"]["fields"]["cron"][0]


def test_the_payload_is_validated_by_the_kind(owner_api):
    response = create(owner_api, kind="demo.sleep", payload={"seconds": -5})
    assert response.status_code == 400
    assert "seconds" in response.json()["error"]["fields"]["payload"]


def test_schedule_names_are_unique_per_owner(owner_api, other_api):
    assert create(owner_api).status_code == 201
    assert create(owner_api).json()["error"]["fields"]["name"] == ["You already have a schedule with this name."]
    assert create(other_api).status_code == 201


def test_pausing_and_deleting_follow_through_to_beat(owner_api):
    schedule_id = create(owner_api).json()["id"]
    schedule = Schedule.objects.get(pk=schedule_id)
    response = owner_api.patch(f"{SCHEDULES}{schedule_id}/", {"enabled": False}, format="json")
    assert response.status_code == 200
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled is False
    assert owner_api.patch(f"{SCHEDULES}{schedule_id}/", {"cron": "0 9 * * 1-5"}, format="json").status_code == 200
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).crontab.day_of_week == "1-5"
    assert owner_api.delete(f"{SCHEDULES}{schedule_id}/").status_code == 204
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(pk=schedule.periodic_task_id).exists()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("patch", ""), ("delete", ""), ("post", "run/"), ("get", "preview/")],
)
def test_another_users_schedule_is_a_404(owner_api, other_api, method, suffix):
    schedule_id = create(owner_api).json()["id"]
    response = getattr(other_api, method)(f"{SCHEDULES}{schedule_id}/{suffix}", {}, format="json")
    assert response.status_code == 404
    assert Schedule.objects.filter(pk=schedule_id).exists()
    assert not Task.objects.exists()


def test_owners_list_only_their_schedules(owner_api, other_api):
    create(owner_api)
    create(other_api, name="theirs")
    assert [s["name"] for s in owner_api.get(SCHEDULES).json()["results"]] == ["nightly"]


# --- Run now, firing, overlap -----------------------------------------------------------


def test_run_now_submits_a_linked_task_marked_as_run_now(owner_api, owner, django_capture_on_commit_callbacks):
    schedule_id = create(owner_api, payload={"echo": 7}).json()["id"]
    next_run_before = Schedule.objects.get(pk=schedule_id).next_run_at
    with django_capture_on_commit_callbacks() as callbacks:
        response = owner_api.post(f"{SCHEDULES}{schedule_id}/run/", format="json")
    assert response.status_code == 201
    task = Task.objects.get(pk=response.json()["id"])
    assert (task.trigger, str(task.schedule_id), task.payload, task.title) == (
        "run_now",
        schedule_id,
        {"echo": 7},
        "nightly",
    )
    assert task.events.get().message == "Submitted (run now)"
    schedule = Schedule.objects.get(pk=schedule_id)
    assert schedule.last_run_task == task
    assert schedule.next_run_at == next_run_before  # run now does not move the timing
    assert len(besides_live_notices(callbacks)) == 1
    assert owner_api.get(f"{SCHEDULES}{schedule_id}/").json()["last_run"]["id"] == str(task.pk)


def test_a_run_fires_once_however_many_wake_ups_arrive(owner):
    schedule = make_schedule(owner)
    due = schedule.next_run_at
    first = schedule_fire(schedule_id=schedule.pk, now=due)
    second = schedule_fire(schedule_id=schedule.pk, now=due + timedelta(milliseconds=5))
    assert first is not None and second is None
    assert first.trigger == "schedule" and first.schedule == schedule
    schedule.refresh_from_db()
    assert schedule.next_run_at == due + timedelta(minutes=1)
    assert Task.objects.count() == 1


def test_a_wake_up_long_before_the_run_is_ignored(owner):
    schedule = make_schedule(owner, cron="0 9 * * *", timezone="UTC")
    assert schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at - timedelta(minutes=5)) is None
    assert not Task.objects.exists()


def test_overlap_skip_skips_runs_while_the_previous_one_is_unfinished(owner):
    schedule = make_schedule(owner, kind="demo.sleep", payload={"seconds": 600}, overlap_policy="skip")
    slow = schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at)
    schedule.refresh_from_db()
    assert schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at) is None
    schedule.refresh_from_db()
    assert schedule.skipped_runs == 1
    Task.objects.filter(pk=slow.pk).update(status=TaskStatus.SUCCEEDED)
    assert schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at) is not None
    assert Task.objects.count() == 2


def test_overlap_allow_runs_alongside_an_unfinished_run(owner):
    schedule = make_schedule(owner, kind="demo.sleep", payload={"seconds": 600})
    schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at)
    schedule.refresh_from_db()
    assert schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at) is not None


def test_a_paused_schedule_does_not_fire_and_resume_skips_missed_runs(owner_api, owner):
    schedule = make_schedule(owner)
    owner_api.patch(f"{SCHEDULES}{schedule.pk}/", {"enabled": False}, format="json")
    assert schedule_fire(schedule_id=schedule.pk, now=schedule.next_run_at) is None
    schedule.refresh_from_db()
    assert schedule_fire(schedule_id=schedule.pk, now=timezone.now() + timedelta(hours=1)) is None


def test_the_catch_up_sweep_fires_a_run_beat_missed(owner, settings):
    from apps.tasks.schedule_services import fire_due_schedules

    settings.SCHEDULE_CATCH_UP_AFTER = 30
    schedule = make_schedule(owner)
    assert fire_due_schedules(now=schedule.next_run_at + timedelta(seconds=10)) == 0  # beat still has time
    assert fire_due_schedules(now=schedule.next_run_at + timedelta(seconds=40)) == 1
    assert fire_due_schedules(now=schedule.next_run_at + timedelta(seconds=41)) == 0


# --- Daylight saving ----------------------------------------------------------------------

SPRING_FORWARD = datetime(2026, 3, 28, 12, tzinfo=UTC)  # Europe/Berlin jumps 02:00 → 03:00 on the 29th
FALL_BACK = datetime(2026, 10, 24, 12, tzinfo=UTC)  # Europe/Berlin repeats 02:00-03:00 on the 25th


def test_a_0230_job_fires_once_on_the_spring_forward_day():
    runs = cron.occurrences("30 2 * * *", "Europe/Berlin", after=SPRING_FORWARD, count=3)
    assert [(r.at.isoformat(), r.flag) for r in runs] == [
        ("2026-03-29T03:30:00+02:00", "gap"),
        ("2026-03-30T02:30:00+02:00", ""),
        ("2026-03-31T02:30:00+02:00", ""),
    ]


def test_a_0230_job_fires_once_on_the_fall_back_day():
    runs = cron.occurrences("30 2 * * *", "Europe/Berlin", after=FALL_BACK, count=3)
    assert [(r.at.isoformat(), r.utc.isoformat(), r.flag) for r in runs] == [
        ("2026-10-25T02:30:00+02:00", "2026-10-25T00:30:00+00:00", "repeated"),
        ("2026-10-26T02:30:00+01:00", "2026-10-26T01:30:00+00:00", ""),
        ("2026-10-27T02:30:00+01:00", "2026-10-27T01:30:00+00:00", ""),
    ]


@pytest.mark.parametrize(("after", "across"), [(SPRING_FORWARD, timedelta(hours=23)), (FALL_BACK, timedelta(hours=25))])
def test_a_0900_job_is_unaffected_by_daylight_saving(after, across):
    runs = cron.occurrences("0 9 * * *", "Europe/Berlin", after=after - timedelta(hours=12), count=3)
    assert [r.at.strftime("%H:%M") for r in runs] == ["09:00"] * 3
    assert [r.flag for r in runs] == ["", "", ""]
    assert runs[1].utc - runs[0].utc == across  # 09:00 stays 09:00 on the clock across the change


def test_firing_across_the_fall_back_hour_runs_the_job_once(owner):
    schedule = make_schedule(owner, cron="30 2 * * *", timezone="Europe/Berlin")
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 10, 25, 0, 30, tzinfo=UTC))
    # Beat may wake up at both 02:30 CEST and 02:30 CET; only the first is a run.
    assert schedule_fire(schedule_id=schedule.pk, now=datetime(2026, 10, 25, 0, 30, tzinfo=UTC)) is not None
    assert schedule_fire(schedule_id=schedule.pk, now=datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) is None
    schedule.refresh_from_db()
    assert schedule.next_run_at == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_the_preview_endpoint_flags_daylight_saving_edges(owner_api, owner):
    schedule = make_schedule(owner, cron="30 2 * * *", timezone="Europe/Berlin")
    runs = schedule_preview(schedule=schedule, count=2, after=FALL_BACK)
    assert runs[0] == {"local": "2026-10-25T02:30:00+02:00", "utc": "2026-10-25T00:30:00+00:00", "flag": "repeated"}
    response = owner_api.get(f"{SCHEDULES}{schedule.pk}/preview/", {"count": 5})
    assert response.status_code == 200
    assert len(response.json()) == 5
    assert owner_api.get(f"{SCHEDULES}{schedule.pk}/preview/", {"count": 1000}).status_code == 400


def test_an_interval_preview_steps_from_the_next_run(owner):
    schedule = make_schedule(owner, cron="", interval_seconds=90, timezone="Asia/Tokyo")
    runs = schedule_preview(schedule=schedule, count=3)
    utc = [datetime.fromisoformat(r["utc"]) for r in runs]
    assert utc[1] - utc[0] == timedelta(seconds=90) and utc[2] - utc[1] == timedelta(seconds=90)
    assert runs[0]["local"].endswith("+09:00")


def test_system_jobs_are_registered_idempotently(settings):
    from django.core.management import call_command

    call_command("register_system_jobs")
    call_command("register_system_jobs")
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert set(settings.CELERY_BEAT_SCHEDULE) <= names
    reaper = PeriodicTask.objects.get(name="taskflow-reap-stale-tasks")
    assert (reaper.task, reaper.interval.every, reaper.interval.period) == ("taskflow.reap_stale_tasks", 30, "seconds")
    assert PeriodicTask.objects.filter(name="taskflow-reap-stale-tasks").count() == 1
