"""Server-side timings of the operator admin on a big task table, against the stock ModelAdmin.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/taskflow_adminbench \
    REDIS_URL=redis://127.0.0.1:6379/11 \
        .venv/bin/python bench/admin_bench.py [--requests 15] [--seed 1000000]

Load the data first with `manage.py seed_tasks --count 1000000` (or pass --seed N to do it
here when the table holds fewer tasks). Each page is requested through Django's full
request handling (middleware, admin, templates) with DEBUG off, in-process, by a logged-in
superuser; the figure is the median of --requests requests after two warm-ups. The stock
admin is a plain `admin.ModelAdmin` registered on a throwaway AdminSite inside this script
only, on the same table. Prints a table and a JSON line for the benchmarks issue.
"""

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskflow_site.settings")
# Production-like request handling: no DEBUG query log, no debug templates.
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "bench-only-not-secret-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("LOG_LEVEL", "warning")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib import admin  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from apps.accounts.models import User  # noqa: E402
from apps.tasks.dashboard import HISTORY_KEY, RECENT_KEY  # noqa: E402
from apps.tasks.models import Task  # noqa: E402

# Static files from the finders (no collectstatic manifest needed for a benchmark).
settings.STORAGES = {
    **settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


class StockTask(Task):
    """The same table under another name, so that none of TaskFlow's per-model templates apply."""

    class Meta:
        proxy = True
        app_label = "tasks"


stock_site = admin.AdminSite(name="stock")
stock_site.register(StockTask, admin.ModelAdmin)
bench_urls = types.ModuleType("bench_admin_urls")
bench_urls.urlpatterns = [path("stock/", stock_site.urls), path("admin/", admin.site.urls)]
sys.modules["bench_admin_urls"] = bench_urls


def timed(client: Client, url: str, *, requests: int, before=None) -> dict:
    samples = []
    for index in range(requests + 2):
        if before:
            before()
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        if index >= 2:
            samples.append(elapsed)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 1),
        "min_ms": round(samples[0], 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0, help="seed up to this many tasks first if fewer exist")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("run this against PostgreSQL (DATABASE_URL)")

    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'tasks_task'::regclass")
        estimate = cursor.fetchone()[0]
    if args.seed and estimate < args.seed:
        call_command("seed_tasks", count=args.seed - max(estimate, 0))
    user = User.objects.filter(email="bench-admin@taskflow.local").first() or User.objects.create_superuser(
        email="bench-admin@taskflow.local", password=None, full_name="Bench Admin"
    )
    client = Client()
    client.force_login(user)

    failed = "status__exact=failed"
    pages = [
        ("task list, unfiltered", "/admin/tasks/task/", "/stock/tasks/stocktask/"),
        ("task list, status=failed", f"/admin/tasks/task/?{failed}", f"/stock/tasks/stocktask/?{failed}"),
        (
            "task list, kind+priority+last 7 days",
            "/admin/tasks/task/?kind=demo.sleep&priority__exact=high&created_within=7d",
            None,
        ),
        ("task list, search by short id", f"/admin/tasks/task/?q={str(Task.objects.first().pk)[:8]}", None),
    ]
    results = {"tasks_estimate": estimate, "requests": args.requests, "pages": {}}
    with override_settings(ROOT_URLCONF="bench_admin_urls"):
        for name, ours, stock in pages:
            row = {"taskflow": timed(client, ours, requests=args.requests)}
            if stock:
                row["stock"] = timed(client, stock, requests=max(5, args.requests // 3))
                row["speedup"] = round(row["stock"]["median_ms"] / row["taskflow"]["median_ms"], 1)
            results["pages"][name] = row
        dashboard = "/admin/tasks/task/dashboard/"
        results["pages"]["dashboard, all aggregates cached"] = {
            "taskflow": timed(client, dashboard, requests=args.requests)
        }
        results["pages"]["dashboard, last hour recomputed (an auto-refresh)"] = {
            "taskflow": timed(client, dashboard, requests=args.requests, before=lambda: cache.delete(RECENT_KEY))
        }
        results["pages"]["dashboard, everything recomputed (every 5 min)"] = {
            "taskflow": timed(
                client, dashboard, requests=args.requests, before=lambda: cache.delete_many([RECENT_KEY, HISTORY_KEY])
            )
        }

    print(f"\n{estimate:,} tasks (planner estimate); median of {args.requests} requests after 2 warm-ups\n")
    print(f"{'page':42} {'TaskFlow':>12} {'stock admin':>12} {'speed-up':>9}")
    for name, row in results["pages"].items():
        stock = row.get("stock", {}).get("median_ms")
        print(
            f"{name:42} {row['taskflow']['median_ms']:>9.1f} ms "
            f"{(f'{stock:.1f} ms' if stock else '—'):>12} {(str(row['speedup']) + 'x') if stock else '':>9}"
        )
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
