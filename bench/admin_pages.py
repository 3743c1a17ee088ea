"""Server-side time of admin pages, TaskFlow's admin against the stock ModelAdmin (rows 5-6).

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.admin_pages --rounds 5 --requests 5

Each page goes
through Django's whole request handling (middleware, admin, templates) with DEBUG off,
in-process, as a logged-in superuser, so the figure is server time without the network.
The stock admin is a plain `admin.ModelAdmin` on a proxy of the same table (bench/urls.py).
Rounds alternate which side goes first; a round's figure is the median of --requests
requests after one warm-up. The CPU this process spent per request (time.process_time: the
Django side, not PostgreSQL's) is reported too, the steadier figure on a shared machine.
The dashboard is timed with its cached aggregates dropped before each request (what the
first operator after the cache expiry waits for) and warm.
Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time

import django

TASKFLOW_CHANGELIST = "/admin/tasks/task/"
STOCK_CHANGELIST = "/bench/stock-admin/baseline/stocktask/"
DASHBOARD = "/admin/tasks/task/dashboard/"
FAILED = "?status__exact=failed"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5, help="requests per page and round")
    parser.add_argument("--staff-email", required=True)
    args = parser.parse_args()
    django.setup()

    from django.core.cache import cache
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    from apps.accounts.models import User
    from apps.tasks import dashboard

    client = Client()
    client.force_login(User.objects.get(email=args.staff_email))

    cpu: dict[str, list[float]] = {}  # CPU of this (the server's) process per request, by URL

    def sample(url: str, *, before=None) -> float:
        if before:
            before()
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        cpu.setdefault(url, []).append((time.process_time() - cpu_started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        return elapsed

    def series(url: str, count: int, *, before=None) -> list[float]:
        sample(url, before=before)  # warm-up
        cpu.pop(url, None)
        return [sample(url, before=before) for _ in range(count)]

    pages = {
        "changelist": (TASKFLOW_CHANGELIST, STOCK_CHANGELIST),
        "changelist_failed": (TASKFLOW_CHANGELIST + FAILED, STOCK_CHANGELIST + FAILED),
    }
    result = {"pairs": {}, "cpu_ms": {}, "dashboard": None}
    for name, (ours, stock) in pages.items():
        rounds = []
        for index in range(args.rounds):
            order = [("taskflow", ours), ("baseline", stock)]
            if index % 2:
                order.reverse()
            measured = {side: series(url, args.requests) for side, url in order}
            rounds.append({side: statistics.median(values) for side, values in measured.items()})
        result["pairs"][name] = rounds
        result["cpu_ms"][name] = {"taskflow": statistics.median(cpu[ours]), "baseline": statistics.median(cpu[stock])}

    try:
        reverse("admin:tasks_dashboard")
    except NoReverseMatch:
        result["dashboard"] = {"skipped": "the admin has no task dashboard yet"}
    else:
        # Whatever the dashboard caches (its module's *_KEY names), except the worker inspection.
        keys = [
            value
            for name, value in vars(dashboard).items()
            if name.endswith("_KEY") and isinstance(value, str) and "worker" not in name.lower()
        ]
        from apps.tasks import rollups

        if rollups.state() is None:
            raise SystemExit("the dashboard's rollups are not built (bench.prepare refreshes them)")
        count = max(args.rounds * args.requests, 10)
        cold = series(DASHBOARD, count, before=lambda: cache.delete_many(keys))
        cold_cpu = statistics.median(cpu.pop(DASHBOARD))
        warm = series(DASHBOARD, count)
        warm_cpu = statistics.median(cpu.pop(DASHBOARD))
        result["dashboard"] = {
            "cold_ms": cold,
            "warm_ms": warm,
            "cold_cpu_ms": cold_cpu,
            "warm_cpu_ms": warm_cpu,
            "cache_keys": keys,
        }
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
