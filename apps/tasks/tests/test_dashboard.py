"""The operators' dashboard and its selectors, on PostgreSQL and the test Redis."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from apps.tasks import dashboard, rollups, selectors
from apps.tasks.models import Task, TaskStatus

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:tasks_dashboard")
WORKERS = reverse("admin:tasks_dashboard_workers")


@pytest.fixture(autouse=True)
def fresh_dashboard_cache():
    # Only our keys: the test Redis database is also the broker of worker tests.
    keys = [dashboard.RECENT_KEY, dashboard.HISTORY_KEY, dashboard.WORKERS_KEY, dashboard.COUNTS_KEY]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def finished(owner, *, kind="demo.noop", status=TaskStatus.SUCCEEDED, seconds=1.0, ago=timedelta(minutes=5)):
    end = timezone.now() - ago
    return Task.objects.create(
        owner=owner,
        kind=kind,
        status=status,
        started_at=end - timedelta(seconds=seconds),
        finished_at=end,
        error="Boom" if status == TaskStatus.FAILED else "",
    )


@pytest.fixture
def history(owner):
    for seconds in range(1, 11):
        finished(owner, kind="demo.sleep", seconds=seconds)
    finished(owner, kind="demo.fail", status=TaskStatus.FAILED, seconds=0.5)
    finished(owner, kind="demo.fail", status=TaskStatus.FAILED, seconds=0.5, ago=timedelta(hours=3))
    finished(owner, kind="demo.noop", seconds=0.01, ago=timedelta(days=2))
    Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=timezone.now())
    Task.objects.create(owner=owner, kind="demo.sleep", status=TaskStatus.RUNNING, started_at=timezone.now())
    old = Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED, queued_at=timezone.now())
    Task.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    rollups.refresh()  # what beat does every TASK_ROLLUP_INTERVAL seconds


def test_live_states_count_tasks_created_in_each_window_and_final_ones_finishes(history):
    now = timezone.now()
    windows = {"hour": timedelta(hours=1), "week": timedelta(days=7)}
    created = selectors.live_counts(now=now, windows=windows)
    assert created["queued"] == {"now": 2, "hour": 1, "week": 1}  # the ten-day-old one only now
    assert created["pending"] == {"now": 0, "hour": 0, "week": 0}
    assert created["running"] == {"now": 1, "hour": 1, "week": 1}
    assert "succeeded" not in created
    done = selectors.finished_by_status(now=now, windows=windows)
    assert done["succeeded"] == {"hour": 10, "week": 11}  # one finished two days ago
    assert done["failed"] == {"hour": 1, "week": 2}
    assert done["cancelled"] == {"hour": 0, "week": 0}


def test_live_counts_include_old_waiting_tasks(history):
    live = selectors.live_counts(now=timezone.now(), windows={})
    assert live == {"pending": {"now": 0}, "queued": {"now": 2}, "running": {"now": 1}, "retrying": {"now": 0}}


def test_throughput_has_a_bucket_per_minute_with_gaps_as_zero(history):
    buckets = selectors.throughput(now=timezone.now(), window=timedelta(hours=1), step="minute")
    assert len(buckets) == 60
    assert sum(b.succeeded for b in buckets) == 10 and sum(b.failed for b in buckets) == 1
    assert buckets[-1].start == timezone.now().replace(second=0, microsecond=0)
    hourly = selectors.throughput(now=timezone.now(), window=timedelta(days=7), step="hour")
    assert len(hourly) == 168
    assert sum(b.succeeded for b in hourly) == 11 and sum(b.failed for b in hourly) == 2


def test_kind_stats_give_p50_and_p95_run_times_and_failures(history):
    stats = {row.kind: row for row in selectors.kind_stats(now=timezone.now(), window=timedelta(days=1))}
    sleep = stats["demo.sleep"]
    assert (sleep.finished, sleep.failed) == (10, 0)
    # From the rollups' histograms: PERCENTILE_CONT's 5.5 and 9.55 within a slot (±4.4 %).
    assert sleep.p50 == pytest.approx(5.5, rel=0.1) and sleep.p95 == pytest.approx(9.55, rel=0.045)
    assert (stats["demo.fail"].failed, stats["demo.fail"].failure_rate) == (2, 1.0)
    assert "demo.noop" not in stats  # finished two days ago


def test_dashboard_renders_counts_charts_queues_and_kinds(client, operator, history):
    client.force_login(operator)
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    html = response.content.decode()
    rows = {row["status"]: row for row in response.context["status_rows"]}
    assert (rows["succeeded"]["hour"], rows["succeeded"]["day"], rows["succeeded"]["week"]) == (10, 10, 11)
    assert (rows["queued"]["hour"], rows["queued"]["week"]) == (1, 1)
    assert rows["queued"]["live"] == 2 and rows["running"]["live"] == 1
    assert html.count('<svg class="tf-chart"') == 2
    assert "10 succeeded, 1 failed" in html  # the last hour's totals
    assert "<code>default</code>" in html  # a queue read from the broker
    assert 'href="/admin/tasks/task/?kind=demo.sleep"' in html
    assert response.context["slowest"][0]["kind"] == "demo.sleep"
    assert response.context["failing"][0] == {
        "kind": "demo.fail",
        "finished": 2,
        "failed": 2,
        "failure_rate": "100.0 %",
        "p50": "0.49 s",  # the middle of 0.5 s's histogram slot
        "p95": "0.49 s",
    }
    assert "Finished-task figures from the rollups as of" in html
    assert "Pause auto-refresh" in html and "tasks/dashboard.js" in html
    assert "cdn" not in html.lower()


def test_dashboard_serves_cached_aggregates_and_says_how_old_they_are(client, operator, history, owner):
    client.force_login(operator)
    first = client.get(DASHBOARD)
    finished(owner, kind="demo.sleep", ago=timedelta(seconds=30))
    cached = client.get(DASHBOARD)
    assert cached.context["status_rows"][4]["hour"] == first.context["status_rows"][4]["hour"] == 10
    assert 'id="recent-age">0</span> s ago' in cached.content.decode()
    fresh = client.get(DASHBOARD + "?refresh=1")  # refreshes the rollups, then the cache
    assert fresh.context["status_rows"][4]["hour"] == 11


def test_the_live_counts_stream_sends_the_status_table_the_page_shows(client, operator, history):
    client.force_login(operator)
    response = client.get(DASHBOARD)
    shown = {
        row["status"]: {column: row[column] for column in ("live", "hour", "day", "week")}
        for row in response.context["status_rows"]
    }
    assert dashboard.status_counts()["statuses"] == shown
    html = response.content.decode()
    assert f'data-counts-url="{reverse("tasks:task-counts-stream")}"' in html
    assert html.count('<tr data-status="') == len(dashboard.STATUS_ORDER)


def test_dashboard_renders_on_an_empty_database(client, operator):
    client.force_login(operator)
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    assert "No finished task in the last 24 hours." in response.content.decode()
    assert "The rollups of finished tasks are not built yet" in response.content.decode()


def test_workers_panel_says_when_no_worker_answers(client, operator, monkeypatch):
    monkeypatch.setattr(dashboard, "INSPECT_TIMEOUT", 0.3)
    client.force_login(operator)
    response = client.get(WORKERS)
    assert response.status_code == 200
    assert "No worker answered within 0.3 s" in response.content.decode()


def test_workers_panel_in_the_embedded_mode_says_inspection_needs_redis(client, operator, settings):
    settings.CELERY_BROKER_URL = "filesystem://"
    client.force_login(operator)
    assert "Worker inspection needs Redis as the broker" in client.get(WORKERS).content.decode()
    assert "Worker inspection needs Redis as the broker" in client.get(DASHBOARD).content.decode()


def test_the_dashboard_is_linked_from_the_admin_index_and_the_task_list(client, viewer):
    client.force_login(viewer)
    assert DASHBOARD in client.get(reverse("admin:index")).content.decode()
    assert DASHBOARD in client.get(reverse("admin:tasks_task_changelist")).content.decode()


def test_the_dashboard_needs_the_view_task_permission(client, make_user):
    client.force_login(make_user("plain-staff@example.com", is_staff=True))
    assert client.get(DASHBOARD).status_code == 403
    assert client.get(WORKERS).status_code == 403
    assert DASHBOARD not in client.get(reverse("admin:index")).content.decode()


def test_bar_chart_draws_a_bar_pair_and_a_tooltip_per_bucket():
    now = timezone.now().replace(second=0, microsecond=0)
    buckets = [selectors.Bucket(start=now - timedelta(minutes=2 - n), succeeded=n, failed=1) for n in range(3)]
    svg = str(dashboard.bar_chart(buckets, label_format="%H:%M", label_every=1, title="t"))
    assert svg.count("<rect") == 6 and svg.count("<title>") == 3
    assert f"{timezone.localtime(buckets[2].start):%H:%M}: 2 succeeded, 1 failed" in svg
