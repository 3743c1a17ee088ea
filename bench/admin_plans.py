"""Does a prepared statement's generic plan hurt the admin's task list? (server-side binding)

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.admin_plans --staff-email … [--requests 20]

With DATABASE_PREPARED_STATEMENTS on, psycopg prepares a statement a connection has run 5
times, and PostgreSQL may then switch that prepared statement to a generic plan (one plan
for every parameter value) after 5 more executions, if it does not look costlier than the
custom plans. A filter on a skewed column (status='failed' is 2 % of the rows, 'succeeded'
90 %) is where a generic plan could go wrong. For each list URL this runs --requests requests
on one connection (the in-process client keeps it) and compares the first five with the last
five, then forces the worst case: `plan_cache_mode = force_generic_plan` for --requests more,
and `force_custom_plan` for as many. Server time per request, in ms. Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time

import django

CHANGELIST = "/admin/tasks/task/"
FILTERS = {
    "unfiltered": "",
    "status=failed": "?status__exact=failed",
    "status=retrying": "?status__exact=retrying",
    "status=succeeded": "?status__exact=succeeded",
    "kind=files.csv_report": "?kind=files.csv_report",
    "kind+status": "?kind=demo.fail&status__exact=failed",
    "priority=critical": "?priority__exact=critical",
    "has_error=yes": "?has_error=yes",
    "created_within=24h": "?created_within=24h",
    "status=failed, 7d": "?status__exact=failed&created_within=7d",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--staff-email", required=True)
    parser.add_argument("--only", nargs="*", help="names of FILTERS to run")
    args = parser.parse_args()
    django.setup()

    from django.db import connection
    from django.test import Client

    from apps.accounts.models import User

    client = Client()
    client.force_login(User.objects.get(email=args.staff_email))

    def timed(url: str) -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        return round(elapsed, 2)

    def plan_mode(mode: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"SET plan_cache_mode = {mode}")

    result = {"prepared_statements": connection.settings_dict.get("OPTIONS", {}).get("prepare_threshold")}
    for name, query in FILTERS.items():
        if args.only and name not in args.only:
            continue
        url = CHANGELIST + query
        plan_mode("auto")
        series = [timed(url) for _ in range(args.requests)]
        plan_mode("force_generic_plan")
        generic = [timed(url) for _ in range(args.requests)]
        plan_mode("force_custom_plan")
        custom = [timed(url) for _ in range(args.requests)]
        plan_mode("auto")
        result[name] = {
            "first5_ms": statistics.median(series[:5]),
            "last5_ms": statistics.median(series[-5:]),
            "forced_generic_ms": statistics.median(generic[5:]),
            "forced_custom_ms": statistics.median(custom[5:]),
            "series_ms": series,
        }
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
