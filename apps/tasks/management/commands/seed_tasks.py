"""Load realistic demo tasks (and their events) fast, for trying the admin at scale.

    python manage.py seed_tasks --count 1000000

Tasks spread over the last --days with a daily rhythm, over --owners demo users (a few
heavy ones), across the registered kinds with per-kind run times and failure rates, mostly
finished, some failed with an error and traceback, a few cancelled, and a handful live
(queued, running, retrying) in the last minutes. PostgreSQL loads with COPY; other
databases with batched INSERTs. The rows bypass the services on purpose: this is demo data
that never ran, written in bulk.
"""

import json
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import JSONField
from django.utils import timezone

from apps.tasks.models import Task, TaskEvent, TaskPriority, TaskStatus
from apps.tasks.registry import get_kind

DEMO_DOMAIN = "demo.taskflow.local"
DEMO_CUSTOMERS = 5_000


@dataclass(frozen=True)
class KindProfile:
    weight: float
    run_seconds: float  # median run time
    spread: float  # log-normal sigma of the run time
    failure_rate: float
    titles: tuple[str, ...]
    errors: tuple[str, ...]


PROFILES = {
    "demo.noop": KindProfile(30, 0.02, 0.6, 0.003, ("Smoke test #{n}", "Heartbeat {n}"), ("RuntimeError: sentinel",)),
    "notify.email": KindProfile(
        28,
        0.7,
        0.5,
        0.04,
        ("Welcome email #{n}", "Invoice ready #{n}", "Password reset #{n}", "Weekly digest #{n}"),
        (
            "SMTPServerDisconnected: Connection unexpectedly closed",
            "SMTPRecipientsRefused: {'user@example.com': (550, b'Mailbox unavailable')}",
            "TimeoutError: timed out connecting to smtp.example.com:587",
        ),
    ),
    "demo.sleep": KindProfile(
        20,
        9.0,
        0.8,
        0.03,
        ("Nightly export {n}", "Thumbnail batch {n}", "Reindex shard {n}", "Sync CRM accounts {n}"),
        (
            "SoftTimeLimitExceeded: the run took longer than its timeout",
            "WorkerLost: the worker running attempt 1 (celery@worker-3) stopped renewing its lease",
            "ConnectionResetError: [Errno 104] Connection reset by peer",
        ),
    ),
    "demo.fail": KindProfile(
        6,
        0.15,
        0.5,
        0.45,
        ("Retry drill {n}", "Flaky upstream check {n}"),
        ("DemoFailure: demo failure (attempt 4 of 5 failing)", "DemoFailure: upstream returned 503"),
    ),
    "files.checksum": KindProfile(
        10, 2.5, 0.9, 0.02, ("Checksum upload {n}",), ("FileNotFoundError: the input file is gone from storage",)
    ),
    "files.csv_report": KindProfile(
        6, 22.0, 0.7, 0.06, ("Monthly report {n}", "Sales CSV {n}"), ("ValueError: row 1043 has 7 columns, not 8",)
    ),
}
PRIORITIES = ([TaskPriority.NORMAL, TaskPriority.HIGH, TaskPriority.LOW, TaskPriority.CRITICAL], [70, 15, 10, 5])
WORKERS = [f"celery@worker-{n}" for n in range(1, 7)]
TRACEBACK = """Traceback (most recent call last):
  File "/app/apps/tasks/executor.py", line 168, in execute
    result = kind.func(TaskContext(task), payload)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/apps/{module}.py", line {line}, in {function}
    {statement}
{error}
"""


def _payload(kind: str, rng: random.Random, n: int) -> dict:
    if kind == "demo.sleep":
        return {"seconds": round(rng.uniform(1, 30), 1), "steps": 10}
    if kind == "demo.fail":
        return {"failures": rng.randint(1, 5), "message": "demo failure"}
    if kind == "notify.email":
        return {"subject": f"Your TaskFlow update #{n}", "body": "Hello,\n\nyour report is ready.\n\n— TaskFlow"}
    if kind == "demo.noop":
        # A customer id: a selective key for payload searches (a few dozen tasks each at 1M).
        return {"echo": {"batch": n}, "customer": rng.randint(1, DEMO_CUSTOMERS)}
    return {}


class Command(BaseCommand):
    help = "Load realistic demo tasks with their events (COPY on PostgreSQL, batched INSERTs elsewhere)."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=10_000, help="how many tasks (default 10,000)")
        parser.add_argument("--owners", type=int, default=50, help="demo users to spread them over (default 50)")
        parser.add_argument("--days", type=float, default=28, help="spread over the last N days (default 28)")
        parser.add_argument("--no-events", action="store_true", help="skip the TaskEvent rows (faster)")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable data")
        parser.add_argument("--batch-size", type=int, default=5_000, help="rows per INSERT batch off PostgreSQL")

    def handle(self, *args, count, owners, days, no_events, seed, batch_size, **options):
        if count < 0 or owners < 1 or days <= 0:
            raise CommandError("--count must be ≥ 0, --owners ≥ 1 and --days > 0")
        kinds = [name for name in PROFILES if get_kind(name) is not None]
        if not kinds:
            raise CommandError("none of the demo kinds is registered")
        started = time.monotonic()
        rng = random.Random(seed)
        users = self._owners(owners)
        self.generator = RowGenerator(rng=rng, kinds=kinds, owners=users, days=days, now=timezone.now())
        tasks = self.generator.tasks(count)
        with transaction.atomic():
            if connection.vendor == "postgresql":
                written, events = self._copy(tasks, with_events=not no_events)
            else:
                written, events = self._insert(tasks, with_events=not no_events, batch_size=batch_size)
        self._analyze()
        elapsed = time.monotonic() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {written:,} tasks and {events:,} events over {len(users)} owners in {elapsed:.1f} s "
                f"({written / max(elapsed, 1e-9):,.0f} tasks/s)."
            )
        )

    def _owners(self, wanted: int) -> list:
        User = get_user_model()
        emails = [f"user{n:03d}@{DEMO_DOMAIN}" for n in range(1, wanted + 1)]
        existing = {user.email: user for user in User.objects.filter(email__in=emails)}
        missing = []
        for n, email in enumerate(emails, 1):
            if email not in existing:
                user = User(email=email, full_name=f"Demo User {n:03d}")
                user.set_unusable_password()  # demo owners never log in
                missing.append(user)
        User.objects.bulk_create(missing)
        return list(User.objects.filter(email__in=emails).order_by("email"))

    # --- Writing ---------------------------------------------------------------------------

    @staticmethod
    def _columns(model, generated: set[str]) -> tuple[list, dict]:
        """Every concrete column: generated ones, and the model default for the rest."""
        fields, defaults = [], {}
        for field in model._meta.concrete_fields:
            if field.attname == "id" and model is TaskEvent:
                continue  # identity column
            fields.append(field)
            if field.attname not in generated:
                if not (field.has_default() or field.null or field.empty_strings_allowed):
                    raise CommandError(f"seed_tasks does not know how to fill {model.__name__}.{field.name}")
                default = field.get_default()  # "" for text columns without a default
                defaults[field.attname] = json.dumps(default) if isinstance(field, JSONField) else default
        return fields, defaults

    def _copy(self, tasks, *, with_events: bool) -> tuple[int, int]:
        task_fields, task_defaults = self._columns(Task, RowGenerator.TASK_FIELDS)
        event_fields, event_defaults = self._columns(TaskEvent, RowGenerator.EVENT_FIELDS)
        events = []
        written = 0
        with connection.cursor() as cursor:
            columns = ", ".join(connection.ops.quote_name(field.column) for field in task_fields)
            with cursor.copy(f"COPY {Task._meta.db_table} ({columns}) FROM STDIN") as copy:
                for row, task_events in tasks:
                    copy.write_row([row.get(f.attname, task_defaults.get(f.attname)) for f in task_fields])
                    written += 1
                    if with_events:
                        events.extend(task_events)
                    if written % 100_000 == 0:
                        self.stdout.write(f"  {written:,} tasks…")
            if not with_events:
                return written, 0
            columns = ", ".join(connection.ops.quote_name(field.column) for field in event_fields)
            with cursor.copy(f"COPY {TaskEvent._meta.db_table} ({columns}) FROM STDIN") as copy:
                for event in events:
                    copy.write_row([event.get(f.attname, event_defaults.get(f.attname)) for f in event_fields])
        return written, len(events)

    def _insert(self, tasks, *, with_events: bool, batch_size: int) -> tuple[int, int]:
        task_fields, task_defaults = self._columns(Task, RowGenerator.TASK_FIELDS)
        event_fields, event_defaults = self._columns(TaskEvent, RowGenerator.EVENT_FIELDS)

        def statement(model, fields):
            columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
            return f"INSERT INTO {model._meta.db_table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"

        def prepared(values: dict, fields, defaults) -> list:
            out = []
            for field in fields:
                value = values.get(field.attname, defaults.get(field.attname))
                if isinstance(field, JSONField):
                    out.append(value)  # already JSON text
                else:
                    out.append(field.get_db_prep_save(value, connection))
            return out

        written = event_count = 0
        task_batch, event_batch = [], []
        with connection.cursor() as cursor:

            def flush():
                cursor.executemany(statement(Task, task_fields), task_batch)
                if event_batch:
                    cursor.executemany(statement(TaskEvent, event_fields), event_batch)
                task_batch.clear()
                event_batch.clear()

            for row, task_events in tasks:
                task_batch.append(prepared(row, task_fields, task_defaults))
                written += 1
                if with_events:
                    event_batch.extend(prepared(event, event_fields, event_defaults) for event in task_events)
                    event_count += len(task_events)
                if len(task_batch) >= batch_size:
                    flush()
            flush()
        return written, event_count

    def _analyze(self):
        """Fresh statistics for the planner (and the admin's row estimate); on PostgreSQL outside
        a transaction also VACUUM, which lets the dashboard's index-only scans skip the heap."""
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            for table in (Task._meta.db_table, TaskEvent._meta.db_table):
                cursor.execute(f"{'ANALYZE' if connection.in_atomic_block else 'VACUUM (ANALYZE)'} {table}")


class RowGenerator:
    """Rows as dicts of column values (JSON columns as JSON text), with each task's events."""

    TASK_FIELDS = {
        "id",
        "owner_id",
        "kind",
        "title",
        "description",
        "payload",
        "priority",
        "queue",
        "status",
        "attempts",
        "max_retries",
        "timeout",
        "run_at",
        "idempotency_key",
        "progress",
        "progress_message",
        "result",
        "error",
        "traceback",
        "worker",
        "lease_expires_at",
        "run_id",
        "cancel_requested",
        "created_at",
        "queued_at",
        "started_at",
        "finished_at",
        "updated_at",
    }
    EVENT_FIELDS = {"task_id", "created_at", "from_status", "to_status", "actor_id", "message", "worker", "attempt"}

    def __init__(self, *, rng: random.Random, kinds: list[str], owners: list, days: float, now: datetime):
        self.rng = rng
        self.kinds = kinds
        self.kind_weights = [PROFILES[kind].weight for kind in kinds]
        self.owners = owners
        # A few heavy users: weight 1/rank^0.8.
        self.owner_weights = [1 / (rank**0.8) for rank in range(1, len(owners) + 1)]
        self.span = days * 86400
        self.now = now

    def _created_at(self) -> datetime:
        # More work in working hours: accept a uniform time with a daily-rhythm probability.
        while True:
            ago = self.rng.random() * self.span
            moment = self.now - timedelta(seconds=ago)
            hour = moment.hour + moment.minute / 60
            if self.rng.random() < 0.35 + 0.65 * math.sin(math.pi * max(0.0, min(1.0, (hour - 6) / 14))):
                return moment

    def tasks(self, count: int):
        rng = self.rng
        kinds = rng.choices(self.kinds, self.kind_weights, k=count)
        owners = rng.choices(self.owners, self.owner_weights, k=count)
        priorities = rng.choices(*PRIORITIES, k=count)
        for n in range(count):
            yield self._task(n + 1, kinds[n], owners[n], priorities[n])

    def _task(self, n: int, kind_name: str, owner, priority: str):
        rng = self.rng
        kind = get_kind(kind_name)
        profile = PROFILES[kind_name]
        created = self._created_at()
        age = (self.now - created).total_seconds()
        status = self._status(age, profile)
        wait = min(rng.lognormvariate(math.log(0.4), 1.2), 600.0)
        run = rng.lognormvariate(math.log(profile.run_seconds), profile.spread)
        task_id = uuid.uuid4()
        title = rng.choice(profile.titles).format(n=n)
        row = {
            "id": task_id,
            "owner_id": owner.pk,
            "kind": kind_name,
            "title": title,
            "description": "",
            "payload": json.dumps(_payload(kind_name, rng, n)),
            "priority": priority,
            "queue": kind.queue,
            "status": status,
            "attempts": 0,
            "max_retries": kind.max_retries,
            "timeout": kind.timeout,
            "run_at": None,
            "idempotency_key": None,
            "progress": 0,
            "progress_message": "",
            "result": None,
            "error": "",
            "traceback": "",
            "worker": "",
            "lease_expires_at": None,
            "run_id": None,
            "cancel_requested": False,
            "created_at": created,
            "queued_at": created,
            "started_at": None,
            "finished_at": None,
            "updated_at": created,
        }
        events = [self._event(task_id, created, "", TaskStatus.QUEUED, actor=owner.pk, message="Submitted")]
        worker = rng.choice(WORKERS)
        started = created + timedelta(seconds=wait)

        def attempt(number: int, at: datetime):
            events.append(
                self._event(
                    task_id,
                    at,
                    TaskStatus.QUEUED if number == 1 else TaskStatus.RETRYING,
                    TaskStatus.RUNNING,
                    worker=worker,
                    message=f"Attempt {number}",
                    attempt=number,
                )
            )

        if status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
            failures = kind.max_retries + 1 if status == TaskStatus.FAILED else self._early_failures(profile, kind)
            runs = failures + (1 if status == TaskStatus.SUCCEEDED else 0)
            at = started
            error = rng.choice(profile.errors)
            for number in range(1, runs + 1):
                attempt(number, at)
                end = at + timedelta(seconds=run)
                if number < runs:
                    events.append(
                        self._event(
                            task_id,
                            end,
                            TaskStatus.RUNNING,
                            TaskStatus.RETRYING,
                            worker=worker,
                            message=f"Attempt {number} failed: {error}",
                            attempt=number,
                        )
                    )
                    at = end + timedelta(seconds=2**number)
            row.update(attempts=runs, worker=worker, started_at=at, finished_at=end, updated_at=end)
            if status == TaskStatus.SUCCEEDED:
                row.update(progress=100, result=json.dumps({"ok": True, "items": rng.randint(1, 500)}))
                events.append(
                    self._event(
                        task_id, end, TaskStatus.RUNNING, status, worker=worker, message="Succeeded", attempt=runs
                    )
                )
            else:
                row.update(progress=rng.randint(0, 90), error=error, traceback=self._traceback(kind_name, error))
                events.append(
                    self._event(
                        task_id,
                        end,
                        TaskStatus.RUNNING,
                        status,
                        worker=worker,
                        message=f"Attempt {runs} failed: {error}",
                        attempt=runs,
                    )
                )
        elif status == TaskStatus.CANCELLED:
            at = created + timedelta(seconds=wait * rng.random())
            row.update(finished_at=at, updated_at=at)
            events.append(self._event(task_id, at, TaskStatus.QUEUED, status, actor=owner.pk, message="Cancelled"))
        elif status == TaskStatus.RUNNING:
            started = min(started, self.now)
            attempt(1, started)
            row.update(
                attempts=1,
                worker=worker,
                started_at=started,
                run_id=uuid.uuid4(),
                updated_at=started,
                lease_expires_at=self.now + timedelta(seconds=30),
                progress=rng.randint(0, 99),
                progress_message="working",
            )
        elif status == TaskStatus.RETRYING:
            attempt(1, started)
            error = rng.choice(profile.errors)
            row.update(
                attempts=1,
                worker=worker,
                started_at=started,
                error=error,
                traceback=self._traceback(kind_name, error),
                run_at=self.now + timedelta(seconds=30),
                queued_at=None,
            )
            events.append(
                self._event(
                    task_id,
                    started,
                    TaskStatus.RUNNING,
                    status,
                    worker=worker,
                    message=f"Attempt 1 failed: {error}",
                    attempt=1,
                )
            )
        return row, events

    def _status(self, age: float, profile: KindProfile) -> str:
        roll = self.rng.random()
        if age < 120:  # the last two minutes are still in flight
            if roll < 0.3:
                return TaskStatus.QUEUED
            if roll < 0.5:
                return TaskStatus.RUNNING
            if roll < 0.55:
                return TaskStatus.RETRYING
        if roll < 0.035:
            return TaskStatus.CANCELLED
        return TaskStatus.FAILED if self.rng.random() < profile.failure_rate else TaskStatus.SUCCEEDED

    def _early_failures(self, profile: KindProfile, kind) -> int:
        """Failed attempts before a success: rare, more for flaky kinds."""
        failures = 0
        while failures < kind.max_retries and self.rng.random() < profile.failure_rate * 1.5:
            failures += 1
        return failures

    @staticmethod
    def _traceback(kind_name: str, error: str) -> str:
        module = kind_name.split(".")[0]
        return TRACEBACK.format(
            module=f"{module}/kinds",
            line=40 + len(kind_name),
            function=kind_name.split(".")[-1],
            statement="return run(ctx, payload)",
            error=error,
        )

    @staticmethod
    def _event(task_id, at, from_status, to_status, *, actor=None, worker="", message="", attempt=0) -> dict:
        return {
            "task_id": task_id,
            "created_at": at,
            "from_status": from_status,
            "to_status": to_status,
            "actor_id": actor,
            "message": message,
            "worker": worker,
            "attempt": attempt,
        }
