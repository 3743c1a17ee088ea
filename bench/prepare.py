"""Django-side set-up of a bench database, run by bench/run.py in its own process.

    DJANGO_SETTINGS_MODULE=bench.settings python -m bench.prepare --rows 1000000

Makes the bench's users with fresh API keys: an API client, a staff member for the task
list and the admin, and the other owners of the fair-sharing rows (F); removes what an
earlier run left, and fills the task table up to --rows: with `manage.py seed_tasks` when the
project has it (else a COPY of plain rows). Seeded tasks still claimable are moved to a queue
no bench worker serves (PARKED_QUEUE). The stock API baseline seeds its own table
(bench/stock/prepare.py). Prints one JSON line for the harness.
"""

import argparse
import io
import json
import os
import sys
import time
import uuid
from datetime import timedelta

import django

CLIENT_EMAIL = "bench-client@bench.taskflow.local"
STAFF_EMAIL = "bench-staff@bench.taskflow.local"
# The fair-sharing rows' owners: the client (owner A) and these (owner B first).
OWNER_EMAILS = [f"bench-owner-{n}@bench.taskflow.local" for n in range(2, 11)]
# Where the seeded tasks that are still queued or retrying go: a wake-up claims the fairest
# claimable task of its queue, so on `default` the bench's workers would run them (sleeps of
# up to 30 s, emails, failing drills) in the middle of a measured row.
PARKED_QUEUE = "bench-parked-seed"


def table_rows(cursor, table: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {table}")  # exact: the bench reports the real size
    return cursor.fetchone()[0]


def copy_tasks(count: int, owner_id: int) -> None:
    """Plain finished noop tasks, for a project without seed_tasks: COPY in one statement."""
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    columns = (
        "id, owner_id, kind, title, description, payload, priority, queue, status, attempts, max_retries, "
        "timeout, progress, progress_message, error, traceback, worker, cancel_requested, callback_url, "
        "trigger, created_at, updated_at, finished_at"
    )
    with connection.cursor() as cursor, cursor.copy(f"COPY tasks_task ({columns}) FROM STDIN") as copy:
        for n in range(count):
            at = now - timedelta(seconds=n)
            status = "failed" if n % 50 == 0 else "succeeded"
            copy.write_row(
                [uuid.uuid4(), owner_id, "demo.noop", f"Seeded {n}", "", "{}", "normal", "default", status, 1, 0,
                 30, 100, "", "", "", "", False, "", "api", at, at, at]
            )  # fmt: skip


def add_customers(cursor) -> int:
    """Give the demo.noop tasks of a database seeded before they had one a `customer` key (as
    seed_tasks now writes: 1-5,000), the payload search row's selective key. Rows updated."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM tasks_task WHERE kind = 'demo.noop' AND jsonb_exists(payload, 'customer'))"
    )
    if cursor.fetchone()[0]:
        return 0
    cursor.execute(
        """
        UPDATE tasks_task
        SET payload = payload || jsonb_build_object('customer', 1 + mod(abs(hashtext(id::text)), 5000))
        WHERE kind = 'demo.noop' AND jsonb_typeof(payload) = 'object'
        """
    )
    return cursor.rowcount


def park_seeded_work(cursor, bench_owners: list[int]) -> int:
    """Move the seeded tasks that a worker could still claim (queued, retrying) out of the
    queues the bench's workers serve, status and all else kept. Rows moved (none after the
    first run on a database)."""
    cursor.execute(
        "UPDATE tasks_task SET queue = %s WHERE status IN ('queued', 'retrying') AND queue <> %s "
        "AND NOT (owner_id = ANY(%s))",
        [PARKED_QUEUE, PARKED_QUEUE, bench_owners],
    )
    return cursor.rowcount


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True, help="rows wanted in the task and baseline tables")
    parser.add_argument(
        "--sql-seed", action="store_true", help="generate the tasks inside PostgreSQL (bench.seed_sql): 10M in minutes"
    )
    args = parser.parse_args()
    django.setup()

    from django.core.management import call_command, get_commands
    from django.db import connection

    from apps.accounts.models import ApiKey, User, generate_api_key, hash_api_key
    from apps.tasks.models import ConcurrencyLimit

    def user_with_key(email: str, *, staff: bool, name: str = "Client") -> tuple[User, str]:
        user = User.objects.filter(email=email).first()
        if user is None:
            maker = User.objects.create_superuser if staff else User.objects.create_user
            user = maker(email=email, password=None, full_name="Bench " + ("Staff" if staff else name))
        user.api_keys.all().delete()
        prefix, raw = generate_api_key()
        ApiKey.objects.create(user=user, name="bench", prefix=prefix, key_hash=hash_api_key(raw))
        return user, raw

    client, client_key = user_with_key(CLIENT_EMAIL, staff=False)
    staff, staff_key = user_with_key(STAFF_EMAIL, staff=True)
    # Created on an older bench database too: prepare runs before every bench.
    owners = [(client, client_key)] + [
        user_with_key(email, staff=False, name=f"Owner {n}") for n, email in enumerate(OWNER_EMAILS, start=2)
    ]
    owner_ids = [user.pk for user, _key in owners]

    with connection.cursor() as cursor:
        # What an interrupted earlier run may have left (tasks and rows of the bench's owners).
        cursor.execute(
            "DELETE FROM tasks_taskevent WHERE task_id IN (SELECT id FROM tasks_task WHERE owner_id = ANY(%s))",
            [owner_ids],
        )
        cursor.execute("DELETE FROM tasks_task WHERE owner_id = ANY(%s)", [owner_ids])
        tasks = table_rows(cursor, "tasks_task")

    seeded_with = None
    if tasks < args.rows:
        missing = args.rows - tasks
        if args.sql_seed:
            from apps.tasks.management.commands.seed_tasks import Command as SeedTasks
            from bench import seed_sql

            seeded_with = "bench.seed_sql (generate_series in SQL, indexes rebuilt, VACUUM ANALYZE)"
            owners = [user.pk for user in SeedTasks()._owners(50)]
            seed_sql.seed(missing, owners, log=lambda line: print(line, file=sys.stderr, flush=True))
        elif "seed_tasks" in get_commands():
            seeded_with = "manage.py seed_tasks --no-events"
            call_command("seed_tasks", count=missing, no_events=True, seed=9, stdout=io.StringIO())
        else:
            seeded_with = "bench COPY loader"
            copy_tasks(missing, staff.pk)
    with connection.cursor() as cursor:
        backfilled = add_customers(cursor)
        parked = park_seeded_work(cursor, owner_ids)
        # VACUUM as well after a backfill (outside a transaction: Django autocommits here):
        # its dead row versions would otherwise stay, with autovacuum off on the bench host.
        cursor.execute("VACUUM (ANALYZE) tasks_task" if backfilled or parked else "ANALYZE tasks_task")
        tasks = table_rows(cursor, "tasks_task")

    # The dashboard reads finished tasks from rollups that beat keeps; the bench has no beat,
    # so bring them up to date here (the first time: built from the whole table).
    from apps.tasks import rollups

    started = time.monotonic()
    rollups.refresh(wait=True)
    rollups_seconds = round(time.monotonic() - started, 1)

    print(
        json.dumps(
            {
                "rollups_refresh_s": rollups_seconds,
                "client_id": client.pk,
                "client_key": client_key,
                "staff_id": staff.pk,
                "staff_key": staff_key,
                "owners": [{"id": user.pk, "key": key} for user, key in owners],
                "parked_seeded_tasks": parked,
                "concurrency_limits": ConcurrencyLimit.objects.count(),
                "task_rows": tasks,
                "seeded_with": seeded_with,
            }
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
