"""`manage.py seed_tasks`: realistic demo data, loaded with COPY on PostgreSQL."""

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from apps.accounts.models import User
from apps.tasks.models import Task, TaskEvent, TaskStatus

pytestmark = pytest.mark.django_db


def test_seed_tasks_loads_a_realistic_mix_with_events(capsys):
    call_command("seed_tasks", count=2000, owners=7, days=14, seed=3)
    assert "Seeded 2,000 tasks" in capsys.readouterr().out
    assert Task.objects.count() == 2000
    assert Task.objects.values("owner").distinct().count() == 7
    statuses = dict(Task.objects.values_list("status").annotate(n=Count("id")))
    assert statuses["succeeded"] > 1500 and statuses["failed"] > 20 and statuses["cancelled"] > 20
    assert set(Task.objects.values_list("kind", flat=True)) >= {"demo.noop", "demo.sleep", "notify.email"}
    assert set(Task.objects.values_list("priority", flat=True)) == {"low", "normal", "high", "critical"}
    failed = Task.objects.filter(status=TaskStatus.FAILED).first()
    assert failed.error and failed.traceback.startswith("Traceback") and failed.attempts == failed.max_retries + 1
    done = Task.objects.filter(status=TaskStatus.SUCCEEDED).first()
    assert done.progress == 100 and done.started_at >= done.created_at and done.finished_at > done.started_at
    events = list(done.events.values_list("from_status", "to_status"))
    assert events[0] == ("", "queued") and events[-1] == ("running", "succeeded")
    assert TaskEvent.objects.count() > 3 * 2000 * 0.9


def test_seed_tasks_reuses_its_demo_owners_and_can_skip_events():
    call_command("seed_tasks", count=50, owners=3, seed=1)
    events = TaskEvent.objects.count()
    call_command("seed_tasks", count=50, owners=3, seed=2, no_events=True)
    assert Task.objects.count() == 100
    assert TaskEvent.objects.count() == events
    assert User.objects.filter(email__endswith="@demo.taskflow.local").count() == 3
    assert not User.objects.get(email="user001@demo.taskflow.local").has_usable_password()


def test_seeded_tasks_are_spread_over_the_requested_days():
    call_command("seed_tasks", count=500, owners=2, days=3, seed=5, no_events=True)
    oldest = Task.objects.order_by("created_at").first().created_at
    newest = Task.objects.order_by("-created_at").first().created_at
    assert (newest - oldest).days in (2, 3)


def test_seed_tasks_rejects_nonsense():
    with pytest.raises(CommandError):
        call_command("seed_tasks", count=10, owners=0)
