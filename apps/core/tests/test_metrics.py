"""Prometheus metrics: request and task metrics, summed across gunicorn workers and Celery children."""

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework_simplejwt.tokens import RefreshToken

from apps.tasks import metrics, services
from apps.tasks.models import Task, TaskStatus
from tests.support.metrics import KNOWN_METRICS
from tests.support.processes import Worker, free_port, gunicorn_command, http, serving_pids, wait_for

TASKS = "/api/tasks/"


def parse(page: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a metrics page."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def local(name: str, **labels) -> float:
    """A sample of this (test) process's own registry: single-process mode."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(url: str) -> dict:
    response = http("GET", url)
    assert response.status == 200, response.body[:500]
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.body.decode())


def requests_served(samples: dict, view: str, status: str = "200") -> float:
    """GET requests to a view answered with `status`: the count of the one request metric."""
    return value(samples, "taskflow_http_request_seconds_count", view=view, method="GET", status=status)


def sample_names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def make_task(owner, **fields) -> Task:
    defaults = {"kind": "demo.noop", "status": TaskStatus.QUEUED, "queued_at": timezone.now(), "max_retries": 0}
    return Task.objects.create(owner=owner, **(defaults | fields))


# --- In one process (embedded mode: no PROMETHEUS_MULTIPROC_DIR) ------------------------------


@pytest.mark.django_db
def test_metrics_page_works_in_a_single_process_without_a_multiprocess_directory(api, owner_api):
    owner_api.get("/api/kinds/")
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.content.decode())
    assert requests_served(samples, "tasks:kinds") >= 1
    assert {"taskflow_tasks_by_status", "taskflow_queue_depth", "python_info"} <= sample_names(samples)
    assert not {name for name in sample_names(samples) if name.startswith("django_db_")}, "no per-statement metric"
    # The database, read at the scrape: up, one round trip, its connections (this test's at least).
    assert samples[("taskflow_database_up", frozenset())] == 1
    assert 0 < samples[("taskflow_database_ping_seconds", frozenset())] < 5
    assert sum(v for (name, _), v in samples.items() if name == "taskflow_database_connections") >= 1


@pytest.mark.django_db
def test_submissions_are_counted_by_kind_and_a_replay_is_not(owner_api, django_capture_on_commit_callbacks):
    noop_before = local("taskflow_tasks_submitted_total", kind="demo.noop")
    sleep_before = local("taskflow_tasks_submitted_total", kind="demo.sleep")
    with django_capture_on_commit_callbacks(execute=True):
        owner_api.post(TASKS, {"kind": "demo.noop", "idempotency_key": "once"}, format="json")
        owner_api.post(TASKS, {"kind": "demo.noop", "idempotency_key": "once"}, format="json")  # a replay
        bulk = [{"kind": "demo.noop"}, {"kind": "demo.noop"}, {"kind": "demo.sleep", "payload": {"seconds": 1}}]
        assert owner_api.post(f"{TASKS}bulk/", {"tasks": bulk}, format="json").status_code == 201
    assert local("taskflow_tasks_submitted_total", kind="demo.noop") - noop_before == 3
    assert local("taskflow_tasks_submitted_total", kind="demo.sleep") - sleep_before == 1


@pytest.mark.django_db
def test_a_claimed_and_finished_attempt_records_its_queue_wait_and_run_time(owner, django_capture_on_commit_callbacks):
    task = make_task(owner, queued_at=timezone.now() - timedelta(seconds=2))
    waits_before = local("taskflow_task_queue_wait_seconds_count", kind="demo.noop")
    wait_sum_before = local("taskflow_task_queue_wait_seconds_sum", kind="demo.noop")
    started_before = local("taskflow_tasks_started_total", kind="demo.noop")
    runs_before = local("taskflow_task_run_seconds_count", kind="demo.noop")
    succeeded_before = local("taskflow_tasks_succeeded_total", kind="demo.noop")
    claimed = services.task_claim(task_id=task.pk, worker="w1")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.task_succeed(task=claimed, result={})
    assert local("taskflow_tasks_started_total", kind="demo.noop") - started_before == 1
    assert local("taskflow_task_queue_wait_seconds_count", kind="demo.noop") - waits_before == 1
    assert 2 <= local("taskflow_task_queue_wait_seconds_sum", kind="demo.noop") - wait_sum_before < 10
    assert local("taskflow_task_run_seconds_count", kind="demo.noop") - runs_before == 1
    assert local("taskflow_tasks_succeeded_total", kind="demo.noop") - succeeded_before == 1


@pytest.mark.django_db
def test_a_run_lost_with_its_worker_counts_as_retried_or_failed(owner, django_capture_on_commit_callbacks):
    retried_before = local("taskflow_tasks_retried_total", kind="demo.sleep")
    failed_before = local("taskflow_tasks_failed_total", kind="demo.noop")
    expired = timezone.now() - timedelta(seconds=5)
    make_task(owner, kind="demo.sleep", status=TaskStatus.RUNNING, attempts=1, max_retries=3, lease_expires_at=expired)
    make_task(owner, kind="demo.noop", status=TaskStatus.RUNNING, attempts=1, max_retries=0, lease_expires_at=expired)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reap_stale_tasks()["lost_runs"] == 2
    assert local("taskflow_tasks_retried_total", kind="demo.sleep") - retried_before == 1
    assert local("taskflow_tasks_failed_total", kind="demo.noop") - failed_before == 1


@pytest.mark.django_db
def test_tasks_by_status_counts_every_status_exactly_on_a_small_table(owner):
    for status in ("queued", "queued", "running", "succeeded", "failed"):
        make_task(owner, status=status)
    counts = metrics.task_counts_by_status()
    assert counts == {
        "pending": 0,
        "queued": 2,
        "running": 1,
        "retrying": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
    }


@pytest.mark.django_db(transaction=True)
def test_tasks_by_status_reads_final_statuses_from_planner_statistics_on_a_big_table(owner, monkeypatch):
    Task.objects.bulk_create(
        [Task(owner=owner, kind="demo.noop", status="succeeded") for _ in range(300)]
        + [Task(owner=owner, kind="demo.noop", status="failed") for _ in range(100)]
        + [Task(owner=owner, kind="demo.noop", status="queued") for _ in range(7)]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Task._meta.db_table}")
    monkeypatch.setattr(metrics, "EXACT_COUNT_BELOW", 100)  # "big" from 100 rows on
    counts = metrics.task_counts_by_status()
    assert counts["queued"] == 7, "waiting and running tasks are always counted exactly"
    assert counts["succeeded"] == pytest.approx(300, abs=5)
    assert counts["failed"] == pytest.approx(100, abs=5)
    assert counts["cancelled"] == 0


@pytest.mark.django_db
def test_queue_depth_gauge_counts_the_wake_ups_waiting_in_each_queue(owner_api, django_capture_on_commit_callbacks):
    def depth_of(queue):
        return value(parse(owner_api.get("/metrics").content.decode()), "taskflow_queue_depth", queue=queue)

    before = depth_of("default")
    with django_capture_on_commit_callbacks(execute=True):
        bulk = [{"kind": "demo.noop"} for _ in range(3)]
        owner_api.post(f"{TASKS}bulk/", {"tasks": bulk}, format="json")
    assert depth_of("default") - before == 3
    samples = parse(owner_api.get("/metrics").content.decode())
    for queue in metrics.known_queues():
        assert ("taskflow_queue_depth", frozenset({("queue", queue)})) in samples, queue


# --- Several processes: gunicorn workers and Celery prefork children --------------------------


def submit_over_http(web, headers, kind="demo.noop", **data):
    response = http("POST", web.url(TASKS), headers=headers, json_body={"kind": kind, **data})
    assert response.status == 201, response.body
    return response.json()["id"]


def wait_until_final(task_ids, timeout=60):
    def all_final():
        return Task.objects.filter(pk__in=task_ids, status__in=("succeeded", "failed", "cancelled")).count() == len(
            task_ids
        )

    wait_for(all_final, timeout=timeout, message="the tasks to finish")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_gunicorn_workers_and_a_celery_worker_expose_every_metric_the_dashboard_charts(
    owner, web_env, worker_env, start_web, tmp_path
):
    web = start_web(web_env, gunicorn_command(workers=2, threads=4))
    worker_port = free_port()
    worker = Worker(
        worker_env
        | {"WORKER_METRICS_PORT": str(worker_port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "worker-metrics")},
        name="metrics-worker",
    ).start()
    try:
        headers = {"Authorization": f"Bearer {RefreshToken.for_user(owner).access_token}"}
        requests_before = requests_served(scrape(web.url("/metrics")), "healthz")
        statuses = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            task_ids = list(pool.map(lambda _: submit_over_http(web, headers), range(6)))
            # Bursts until both gunicorn workers have served some (the kernel picks who accepts).
            while len(serving_pids(web.read_log())) < 2 and len(statuses) < 400:
                statuses += pool.map(lambda _: http("GET", web.url("/healthz")).status, range(40))
        assert statuses == [200] * len(statuses)
        assert len(serving_pids(web.read_log())) == 2, "both gunicorn workers served requests"
        wait_until_final(task_ids)

        # Whichever gunicorn worker answers, /metrics sums the counts of both.
        for _ in range(4):
            web_samples = scrape(web.url("/metrics"))
            assert requests_served(web_samples, "healthz") - requests_before == len(statuses)
            assert value(web_samples, "taskflow_tasks_submitted_total", kind="demo.noop") == 6
            assert value(web_samples, "taskflow_tasks_by_status", status="succeeded") == 6
            assert ("taskflow_queue_depth", frozenset({("queue", "default")})) in web_samples

        def worker_counts_complete():
            samples = scrape(f"http://127.0.0.1:{worker_port}/metrics")
            return samples if value(samples, "taskflow_tasks_succeeded_total", kind="demo.noop") == 6 else None

        worker_samples = wait_for(worker_counts_complete, timeout=20, message="the worker's counters")
        assert value(worker_samples, "taskflow_tasks_started_total", kind="demo.noop") == 6
        assert value(worker_samples, "taskflow_task_run_seconds_count", kind="demo.noop") == 6
        assert value(worker_samples, "taskflow_task_queue_wait_seconds_count", kind="demo.noop") == 6
        exported = sample_names(web_samples) | sample_names(worker_samples)
        missing = KNOWN_METRICS - exported
        assert not missing, f"the dashboard charts metrics nobody exports: {sorted(missing)}"
    finally:
        worker.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_metrics_add_up_outcomes_and_histograms_over_its_pool_children(owner_api, worker_env, tmp_path):
    metrics_dir = tmp_path / "worker-metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over by an earlier run")  # emptied at start
    port = free_port()
    worker = Worker(
        worker_env | {"WORKER_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        concurrency=2,
        name="children-worker",
    ).start()
    try:

        def submit(kind, **data):
            response = owner_api.post(TASKS, {"kind": kind, **data}, format="json")
            assert response.status_code == 201, response.content
            return response.json()["id"]

        # Two sleepers at once keep both children busy, so both record metrics.
        task_ids = [submit("demo.sleep", payload={"seconds": 1, "steps": 2}) for _ in range(2)]
        task_ids.append(submit("demo.fail", payload={"failures": 1}, max_retries=1))  # retried, then succeeds
        task_ids.append(submit("demo.fail", payload={"failures": 5}, max_retries=0))  # fails for good
        wait_until_final(task_ids)

        def complete():
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
            fails_done = value(samples, "taskflow_tasks_started_total", kind="demo.fail") == 3
            sleeps_done = value(samples, "taskflow_tasks_succeeded_total", kind="demo.sleep") == 2
            return samples if fails_done and sleeps_done else None

        samples = wait_for(complete, timeout=20, message="the worker's counters")
        assert value(samples, "taskflow_tasks_started_total", kind="demo.sleep") == 2
        assert value(samples, "taskflow_tasks_succeeded_total", kind="demo.fail") == 1
        assert value(samples, "taskflow_tasks_retried_total", kind="demo.fail") == 1
        assert value(samples, "taskflow_tasks_failed_total", kind="demo.fail") == 1
        assert value(samples, "taskflow_task_run_seconds_count", kind="demo.sleep") == 2
        assert value(samples, "taskflow_task_run_seconds_sum", kind="demo.sleep") >= 2.0
        assert value(samples, "taskflow_task_run_seconds_bucket", kind="demo.sleep", le="0.5") == 0
        assert value(samples, "taskflow_task_run_seconds_bucket", kind="demo.sleep", le="+Inf") == 2
        assert value(samples, "taskflow_task_queue_wait_seconds_count", kind="demo.fail") == 3
        child_pids = {re.search(r"_(\d+)\.db$", path.name).group(1) for path in metrics_dir.glob("histogram_*.db")}
        assert len(child_pids) == 2, "both pool children wrote metrics, and one scrape summed them"
        assert not (metrics_dir / "counter_999999.db").exists()
    finally:
        worker.stop()


@pytest.mark.worker
def test_a_worker_without_a_metrics_directory_makes_its_own_and_removes_it_when_it_stops(worker_env):
    env = {key: value for key, value in worker_env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    port = free_port()
    worker = Worker(env | {"WORKER_METRICS_PORT": str(port)}, name="own-dir-worker").start()
    try:
        assert http("GET", f"http://127.0.0.1:{port}/metrics").status == 200
        own_dirs = list((Path(env["TASKFLOW_VAR_DIR"]) / "metrics").glob(f"worker-{worker.process.pid}"))
        assert len(own_dirs) == 1
    finally:
        worker.stop()
    assert not own_dirs[0].exists()


@pytest.mark.django_db(transaction=True)
def test_counts_of_gunicorn_workers_that_exited_are_kept(web_env, start_web):
    command = [*gunicorn_command(workers=2, threads=1), "--max-requests", "2", "--max-requests-jitter", "0"]
    web = start_web(web_env, command)
    before = requests_served(scrape(web.url("/metrics")), "healthz")
    # Two workers of two requests each: six requests need at least one fresh worker.
    for _ in range(6):
        assert http("GET", web.url("/healthz")).status == 200
    assert requests_served(scrape(web.url("/metrics")), "healthz") - before == 6
    assert len(serving_pids(web.read_log())) > 2, "workers were recycled after 2 requests each"
    assert "Traceback" not in web.read_log(), "child_exit marked the exited workers dead without error"


def test_the_database_backend_is_djangos_own_postgresql_one():
    from apps.tasks.beat import PostgresBeatLock, beat_lock

    assert connection.settings_dict["ENGINE"] == "django.db.backends.postgresql"
    assert connection.vendor == "postgresql"
    assert isinstance(beat_lock(), PostgresBeatLock), "two beats on two machines still share one lock"
