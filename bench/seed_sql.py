"""Ten million tasks in minutes: seed_tasks' shape generated inside PostgreSQL.

`manage.py seed_tasks` builds each row in Python (about 10 minutes per million here with its
events off); at the `--full` profile's 10,000,000 rows the bench generates them with one
INSERT … SELECT over generate_series instead, with the same kinds, weights, run times,
failure rates, owners (a few heavy ones), priorities and live tasks in the last two minutes.
The daily rhythm and early failures before a success are left out.

Loading into a table with a dozen indexes (one a trigram GIN) and a foreign key is slower
than building the indexes afterwards, so the secondary indexes are dropped, the rows loaded
with foreign-key triggers off (the owners exist), and the indexes rebuilt from their saved
definitions; then VACUUM ANALYZE (this PostgreSQL has autovacuum off).
"""

import time

# kind: (weight, median run seconds, log-normal sigma, failure rate, title, error)
KINDS = {
    "demo.noop": (30, 0.02, 0.6, 0.003, "Smoke test #", "RuntimeError: sentinel"),
    "notify.email": (28, 0.7, 0.5, 0.04, "Welcome email #", "SMTPServerDisconnected: Connection unexpectedly closed"),
    "demo.sleep": (20, 9.0, 0.8, 0.03, "Nightly export ", "ConnectionResetError: [Errno 104] Connection reset by peer"),
    "demo.fail": (6, 0.15, 0.5, 0.45, "Retry drill ", "DemoFailure: upstream returned 503"),
    "files.checksum": (10, 2.5, 0.9, 0.02, "Checksum upload ", "FileNotFoundError: the input file is gone"),
    "files.csv_report": (6, 22.0, 0.7, 0.06, "Monthly report ", "ValueError: row 1043 has 7 columns, not 8"),
}
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/apps/tasks/executor.py", line 168, in execute\n'
    "    result = kind.func(TaskContext(task), payload)\n"
)
CHUNK = 1_000_000

INSERT = """
INSERT INTO tasks_task (
    id, owner_id, kind, title, description, payload, priority, queue, status, attempts, max_retries,
    timeout, run_at, idempotency_key, progress, progress_message, result, error, traceback, worker,
    lease_expires_at, run_id, cancel_requested, callback_url, trigger, schedule_id,
    created_at, queued_at, started_at, finished_at, updated_at)
SELECT gen_random_uuid(), owner_id, kind, title || n, '', payload, priority, queue, status,
    CASE status WHEN 'failed' THEN max_retries + 1 WHEN 'succeeded' THEN 1
        WHEN 'running' THEN 1 WHEN 'retrying' THEN 1 ELSE 0 END,
    max_retries, timeout,
    CASE WHEN status = 'retrying' THEN %(now)s + interval '30 seconds' END, NULL,
    CASE status WHEN 'succeeded' THEN 100 WHEN 'failed' THEN (u_progress * 90)::int
        WHEN 'running' THEN (u_progress * 99)::int ELSE 0 END,
    CASE WHEN status = 'running' THEN 'working' ELSE '' END,
    CASE WHEN status = 'succeeded' THEN jsonb_build_object('ok', true, 'items', 1 + (u_progress * 499)::int) END,
    CASE WHEN status IN ('failed', 'retrying') THEN error ELSE '' END,
    CASE WHEN status IN ('failed', 'retrying') THEN %(traceback)s || error || E'\\n' ELSE '' END,
    CASE WHEN status IN ('succeeded', 'failed', 'running', 'retrying') THEN worker ELSE '' END,
    CASE WHEN status = 'running' THEN %(now)s + interval '30 seconds' END,
    CASE WHEN status = 'running' THEN gen_random_uuid() END,
    false, '', 'api', NULL,
    created, CASE WHEN status = 'retrying' THEN NULL ELSE created END,
    CASE WHEN status IN ('succeeded', 'failed', 'retrying') THEN started
        WHEN status = 'running' THEN least(started, %(now)s) END,
    CASE WHEN status IN ('succeeded', 'failed') THEN started + make_interval(secs => run)
        WHEN status = 'cancelled' THEN created + make_interval(secs => wait * u_progress) END,
    CASE WHEN status IN ('succeeded', 'failed') THEN started + make_interval(secs => run)
        WHEN status = 'cancelled' THEN created + make_interval(secs => wait * u_progress)
        WHEN status IN ('running', 'retrying') THEN least(started, %(now)s) ELSE created END
FROM (
    SELECT n, k.*, r.u_progress, r.created,
        (%(owners)s::bigint[])[1 + width_bucket(r.u_owner, %(owner_bounds)s::float8[])] AS owner_id,
        CASE WHEN r.u_priority < 0.70 THEN 'normal' WHEN r.u_priority < 0.85 THEN 'high'
            WHEN r.u_priority < 0.95 THEN 'low' ELSE 'critical' END AS priority,
        'celery@worker-' || (1 + floor(r.u_worker * 6))::int AS worker,
        CASE
            WHEN r.created > %(now)s - interval '2 minutes' AND r.u_status < 0.30 THEN 'queued'
            WHEN r.created > %(now)s - interval '2 minutes' AND r.u_status < 0.50 THEN 'running'
            WHEN r.created > %(now)s - interval '2 minutes' AND r.u_status < 0.55 THEN 'retrying'
            WHEN r.u_status < 0.035 THEN 'cancelled'
            WHEN r.u_fail < k.failure_rate THEN 'failed'
            ELSE 'succeeded' END AS status,
        r.wait, exp(ln(k.median) + k.sigma * r.z_run) AS run,
        -- a failed task's last attempt started after its earlier runs and backoffs
        r.created + make_interval(secs => r.wait) AS started
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
    CROSS JOIN LATERAL (
        SELECT random() AS u_kind, random() AS u_owner, random() AS u_status, random() AS u_fail,
            random() AS u_priority, random() AS u_worker, random() AS u_progress,
            %(now)s - make_interval(secs => random() * %(span)s) AS created,
            least(exp(ln(0.4) + 1.2 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())), 600.0) AS wait,
            sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z_run
        WHERE n IS NOT NULL  -- correlated: fresh draws for every n
    ) AS r
    JOIN (VALUES {kinds}) AS k (low, high, kind, median, sigma, failure_rate, max_retries, timeout, queue,
        title, error, payload)
        ON r.u_kind >= k.low AND r.u_kind < k.high
) AS draw
"""


def _literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _kind_rows() -> str:
    """The kinds as a VALUES list of literals (constants of this module and the registry)."""
    from apps.tasks.registry import get_kind

    total = sum(spec[0] for spec in KINDS.values())
    rows, low = [], 0.0
    for index, (name, (weight, median, sigma, failure_rate, title, error)) in enumerate(KINDS.items()):
        kind = get_kind(name)
        high = 1.01 if index == len(KINDS) - 1 else low + weight / total
        payload = '{"echo": {"batch": 1}}' if name == "demo.noop" else "{}"
        values = [low, high, name, median, sigma, failure_rate, kind.max_retries, kind.timeout, kind.queue]
        literals = ", ".join(_literal(value) for value in [*values, title, error])
        rows.append(f"({literals}, {_literal(payload)}::jsonb)")
        low = high
    return ", ".join(rows)


def seed(count: int, owner_ids: list[int], *, days: float = 28, log=print) -> None:
    """Append `count` tasks (owners drawn from owner_ids, heaviest first) and rebuild the indexes."""
    from django.db import connection
    from django.utils import timezone

    if count <= 0:
        return
    statement = INSERT.replace("{kinds}", _kind_rows())
    # seed_tasks' owner weights, 1/rank^0.8: the cumulative shares where each next owner begins
    weights = [1 / rank**0.8 for rank in range(1, len(owner_ids) + 1)]
    bounds = [sum(weights[:index]) / sum(weights) for index in range(1, len(owner_ids))]
    now = timezone.now()
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'tasks_task'::regclass AND NOT x.indisprimary AND NOT x.indisunique"""
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        cursor.execute("SET session_replication_role = replica")  # no per-row foreign-key checks
        try:
            for first in range(1, count + 1, CHUNK):
                last = min(first + CHUNK - 1, count)
                named = {
                    "now": now,
                    "traceback": TRACEBACK,
                    "owners": owner_ids,
                    "owner_bounds": bounds,
                    "span": days * 86400,
                    "first": first,
                    "last": last,
                }
                cursor.execute(statement, named)
                log(f"  {last:,} tasks generated in SQL ({time.monotonic() - started:.0f} s)")
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for name, definition in indexes:
            cursor.execute(definition)
            log(f"  index {name} rebuilt ({time.monotonic() - started:.0f} s)")
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("VACUUM (ANALYZE) tasks_task")
    log(f"  VACUUM ANALYZE tasks_task done ({time.monotonic() - started:.0f} s)")
