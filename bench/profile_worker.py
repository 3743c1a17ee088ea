"""CPU per task run in a worker's pool process, in process, and where it goes.

    DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=... REDIS_URL=... DEBUG=false \\
        python -m bench.profile_worker --tasks 2000 [--profile cprofile]

Submits `--tasks` `demo.noop` tasks for the profile's own user (one bulk insert, before the
clock starts), then runs them one after another as a prefork pool child does: Celery's tracer
for `taskflow.run_task` (`Task.apply`: its signals, Django's fixup, django-structlog's
receivers) around TaskFlow's executor (the claim, the kind, the finish and its hooks, the run's
log line). The figure is `time.process_time()` per run, in batches: the median of the
batches and their spread. What it leaves out is the pool's pipe to the worker's main process
and the broker (row 1 of `make bench` measures those with a real worker); PostgreSQL's and
Redis' CPU are other processes'. Used to weigh a change to the worker's hot path
(docs/performance.md). Log lines go to stderr as in production: redirect it (2>/dev/null).
"""

import argparse
import json
import os
import statistics
import sys
import time

from bench.profile_api import add_cprofile_arguments, setup_production_django

PROFILE_EMAIL = "bench-profile-worker@bench.taskflow.local"
QUEUE = "bench-profile-worker"  # served by no worker: the wake-ups published are deleted after


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="measured runs (after the warm-up)")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--profile", choices=["cprofile"], help="profile the measured runs")
    add_cprofile_arguments(parser)
    args = parser.parse_args(argv)

    setup_production_django(parser)
    from django.conf import settings

    from apps.accounts.models import User
    from apps.tasks.models import Task
    from apps.tasks.submission import TaskSpec, task_submit_bulk
    from apps.tasks.tasks import run_task
    from taskflow_site.celery import app

    user = User.objects.filter(email=PROFILE_EMAIL).first() or User.objects.create_user(
        email=PROFILE_EMAIL, password=None, full_name="Bench Profile"
    )
    per_batch = max(args.tasks // args.batches, 1)
    total = args.warmup + per_batch * args.batches
    spec = TaskSpec(kind="demo.noop", payload={"echo": 1})
    ids = []
    while len(ids) < total:
        chunk = task_submit_bulk(owner=user, specs=[spec] * min(settings.TASK_BULK_MAX, total - len(ids)))
        ids += [task.pk for task in chunk]
    Task.objects.filter(pk__in=ids).update(queue=QUEUE)

    def one(task_id) -> None:
        run_task.apply(args=[str(task_id)], routing_key=QUEUE, hostname="bench-profile")

    try:
        for task_id in ids[: args.warmup]:
            one(task_id)
        profiler = None
        if args.profile == "cprofile":
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        batches, position = [], args.warmup
        for _ in range(args.batches):
            started = time.process_time()
            for task_id in ids[position : position + per_batch]:
                one(task_id)
            position += per_batch
            batches.append((time.process_time() - started) / per_batch * 1000)
        if profiler:
            profiler.disable()
        succeeded = Task.objects.filter(pk__in=ids, status="succeeded").count()
    finally:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM tasks_taskevent WHERE task_id = ANY(%s)", [ids])
            cursor.execute("DELETE FROM tasks_task WHERE id = ANY(%s)", [ids])
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(QUEUE)
    if succeeded != total:
        raise SystemExit(f"{succeeded} of {total} runs succeeded")
    result = {
        "runs": per_batch * args.batches,
        "cpu_ms_median": round(statistics.median(batches), 3),
        "cpu_ms_min": round(min(batches), 3),
        "cpu_ms_max": round(max(batches), 3),
        "profiled": bool(profiler),
    }
    if profiler:
        import pstats

        if args.output:
            profiler.dump_stats(args.output)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats(args.sort).print_stats(args.limit)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(main())
