"""The in-process profile harnesses run with production settings and measure what they say
(correctness only: no timing is asserted)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from apps.tasks.models import Task

BASE_DIR = Path(__file__).resolve().parent.parent.parent
pytestmark = [pytest.mark.bench_smoke, pytest.mark.django_db(transaction=True)]


def run_harness(*args: str) -> dict:
    db = settings.DATABASES["default"]
    if db["ENGINE"].split(".")[-1] != "postgresql" or not settings.REDIS_URL:
        pytest.skip("the harnesses run on the real stack: PostgreSQL and Redis")
    database_url = (
        f"postgres://{quote(db['USER'] or 'postgres')}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "false",
        "SECRET_KEY": "profile-test-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "RATE_LIMIT_USER": "100000000/s",
    }
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < result["cpu_ms_min"] <= result["cpu_ms_median"] <= result["cpu_ms_max"], result
    result["printed"] = done.stdout
    return result


def test_the_worker_harness_runs_every_task_it_submitted_and_leaves_none_behind():
    # It exits non-zero unless every run it measured succeeded.
    result = run_harness("bench.profile_worker", "--tasks", "20", "--warmup", "4", "--batches", "2")
    assert result["runs"] == 20 and not result["profiled"]
    assert not Task.objects.exists()


def test_the_worker_harness_profiles_the_executor():
    done = run_harness(
        "bench.profile_worker", "--tasks", "10", "--warmup", "2", "--batches", "2", "--profile", "cprofile"
    )
    assert done["profiled"]
    assert "apps/tasks/executor.py" in done["printed"]  # cProfile's table covers the executor


def test_the_api_harness_measures_a_post_and_a_list():
    assert (
        run_harness("bench.profile_api", "post", "--requests", "20", "--warmup", "4", "--batches", "2")["requests"]
        == 20
    )
    assert not Task.objects.exists()  # the POSTs' tasks are deleted after
    listed = run_harness("bench.profile_api", "list", "--staff", "--requests", "10", "--warmup", "2", "--batches", "2")
    assert listed["endpoint"] == "GET list"


@pytest.mark.slow
def test_the_wait_profile_splits_a_pool_process_time_and_postgresqls_cpu(bench_database_url, free_ports):
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to tell whose PostgreSQL backend is whose")
    web_port, stock_port = free_ports(2)
    run = [
        sys.executable, "-m", "bench.profile_wait", "--tasks", "300", "--seconds", "2", "--rows", "2000",
        "--database-url", bench_database_url, "--redis-url", settings.REDIS_URL,
        "--port", str(web_port), "--stock-port", str(stock_port),
    ]  # fmt: skip
    done = subprocess.run(run, cwd=BASE_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tasks"] == 300 and result["tasks_per_s"] > 0
    shares = result["pool_process_wall_shares"]
    assert sum(shares.values()) == pytest.approx(1, abs=0.01)
    # The sampled process ran claims and finishes, and waited on PostgreSQL in them.
    assert shares.get("claim: the rest", 0) > 0 and shares.get("finish: the rest", 0) > 0, shares
    assert shares.get("claim: waiting on PostgreSQL", 0) + shares.get("finish: waiting on PostgreSQL", 0) > 0, shares
    postgres = result["postgres_cpu_ms_per_task"]
    assert postgres["pool"] > 0 and postgres.get("gunicorn", 0) >= 0, postgres


def test_a_sample_is_told_apart_by_its_innermost_frame():
    from bench.profile_wait import part_of_run

    run = ["Worker.workloop (billiard/pool.py:1)", "execute (apps/tasks/executor.py:1)"]
    claim = [*run, "_claim (apps/tasks/executor.py:2)", "Cursor.execute (psycopg/cursor.py:3)"]
    assert part_of_run([*claim, "Connection.wait (psycopg/connection.py:4)"]) == "claim: waiting on PostgreSQL"
    # psycopg's generator (dumping the parameters) runs under wait: CPU, not a wait.
    dumping = [*claim, "Connection.wait (psycopg/connection.py:4)", "PostgresQuery.dump (psycopg/_queries.py:5)"]
    assert part_of_run(dumping) == "claim: the rest"
    finish = [*run, "_record_success (apps/tasks/executor.py:6)", "Connection.wait (psycopg/connection.py:4)"]
    assert part_of_run(finish) == "finish: waiting on PostgreSQL"
    receive = ["Worker.workloop (billiard/pool.py:1)", "Worker._make_protected_receive.<locals>.receive (x:1)"]
    assert part_of_run([*receive, "Connection._recv (billiard/connection.py:7)"]) == "waiting for the next wake-up"
    assert part_of_run([*receive, "pickle_loads (billiard/common.py:8)"]).startswith("the rest")
    assert part_of_run(["Thread.run (threading.py:1)", "LeaseKeeper._loop (apps/tasks/executor.py:9)"]) is None
