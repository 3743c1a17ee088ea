"""What one claim costs: the fair claim against claiming the named task, in process.

    python -m bench.claims [--owners 1 2 10] [--tasks 2000] [--rounds 3]

On its own database (`BENCH_CLAIMS_DATABASE_URL`, default taskflow_bench_claims, migrated
here), for each owner count: `--tasks` queued tasks shared round-robin by the owners, then
each side claims every one of them and finishes it at once (a claim, then a success), the
sides alternating, `--rounds` rounds. Before each side the tasks are queued again and the table
is vacuumed and analyzed (this machine's PostgreSQL runs with autovacuum off). The fair side
runs `--slots` claimers in turn, each with its own ranking of the queue, as the pool processes
of the workers do. Reported per task: the CPU of this process (the client: Django, psycopg)
and of its PostgreSQL backend (from /proc), medians over the rounds with their spread.
Writes bench/results/claims.json.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import django

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/taskflow_bench_claims"
QUEUE = "bench-claims"
TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def load(owners: list, count: int) -> list:
    """`count` queued tasks, owner after owner, ids in submission order."""
    from apps.tasks.models import Task

    Task.objects.filter(queue=QUEUE).delete()
    tasks = [Task(owner=owners[n % len(owners)], kind="demo.noop", queue=QUEUE, status="queued") for n in range(count)]
    Task.objects.bulk_create(tasks, batch_size=1000)
    return [task.pk for task in tasks]


def requeue() -> None:
    from django.db import connection

    from apps.tasks.models import Task

    Task.objects.filter(queue=QUEUE).update(status="queued", run_id=None, started_at=None, finished_at=None)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE tasks_task")
        cursor.execute("VACUUM ANALYZE tasks_taskevent")


def run_side(fair: bool, ids: list, slots: int) -> dict:
    from django.conf import settings
    from django.db import connection

    from apps.tasks import fairness, services

    settings.TASK_FAIR_CLAIM = fair
    rankings = [{} for _ in range(slots)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    claimed = 0
    client, backend, wall = time.process_time(), backend_cpu(pid), time.perf_counter()
    for index, task_id in enumerate(ids):
        fairness._listed = rankings[index % slots]
        task = services.task_claim(task_id=task_id, worker="bench", queue=QUEUE)
        if task is not None:
            services.task_succeed(task=task, result={})
            claimed += 1
    client, backend, wall = time.process_time() - client, backend_cpu(pid) - backend, time.perf_counter() - wall
    fairness._listed = {}
    return {
        "claimed": claimed,
        "client_ms": client * 1000 / claimed,
        "backend_ms": backend * 1000 / claimed,
        "wall_ms": wall * 1000 / claimed,
    }


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--owners", type=int, nargs="+", default=[1, 2, 10])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_CLAIMS_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskflow_site.settings")
    os.environ.setdefault("LOG_LEVEL", "warning")
    import psycopg

    base, name = os.environ["DATABASE_URL"].rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    results = {}
    for count in args.owners:
        owners = [
            users.get_or_create(email=f"claims-{n}@bench.taskflow.local", defaults={"password": "!"})[0]
            for n in range(count)
        ]
        ids = load(owners, args.tasks)
        samples = {"fair": [], "named": []}
        for round_index in range(args.rounds):
            order = ("fair", "named") if round_index % 2 == 0 else ("named", "fair")
            for side in order:
                requeue()
                samples[side].append(run_side(side == "fair", ids, args.slots if side == "fair" else 1))
        results[f"{count} owners"] = {
            side: {key: summary([sample[key] for sample in found]) for key in ("client_ms", "backend_ms", "wall_ms")}
            for side, found in samples.items()
        }
        for side, found in results[f"{count} owners"].items():
            print(f"{count:>3} owners {side:>5}: client {found['client_ms']} backend {found['backend_ms']} ms per task")
    out = Path(__file__).parent / "results" / "claims.json"
    out.write_text(
        json.dumps({"tasks": args.tasks, "rounds": args.rounds, "slots": args.slots, "results": results}, indent=2)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
