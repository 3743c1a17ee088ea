"""The in-process profile harnesses run with production settings and measure what they say
(correctness only: no timing is asserted)."""

import json
import os
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
