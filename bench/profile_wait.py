"""Where a pool process's time goes in row 1, waits included, and whose PostgreSQL CPU it is.

    .venv/bin/python -m bench.profile_wait [--tasks 6000] [--seconds 12]

Row 1's set-up (bench.run: the bench database, gunicorn, TaskFlow's worker with WORKER_FLAGS),
then `--tasks` no-ops bulk-submitted while py-spy samples one pool process's main thread with
`--idle` (wall time, waits included, not only CPU) for `--seconds`. It reports that thread's
time by part of a run: waiting for the next wake-up from the worker's main process, the claim
and the finish each split into waiting on PostgreSQL and the rest, and everything else (the
kind, Celery's tracer, the log line...). Then, over the whole drain, the CPU per task of the
PostgreSQL backends, by the process each serves (matched through their client ports with
`ss`): the pool's, gunicorn's (the bulk insert), any other. Row 1's CPU figures say how much
each process spends; this says how long a run waits, and on what (docs/performance.md).
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import run as bench_run

PY_SPY = str(Path(sys.executable).with_name("py-spy"))


def part_of_run(frames: list[str]) -> str | None:
    """The part of a run a sample of the pool's main thread is in (None: another thread). A
    wait is a sample whose innermost frame is the blocking call itself: psycopg's `wait` while
    PostgreSQL answers (its generator's own work, building the query and reading the rows, runs
    under `wait` too, and counts as the rest), the pipe's read while the main process sends
    nothing."""
    names = [frame.split(" (")[0] for frame in frames]
    if "LeaseKeeper._loop" in names or "Worker.workloop" not in names:
        return None
    for phase, marker in (("claim", "_claim"), ("finish", "_record_success")):
        if marker in names:
            return f"{phase}: waiting on PostgreSQL" if names[-1] == "Connection.wait" else f"{phase}: the rest"
    if names[-1] == "Connection._recv" and "Worker._make_protected_receive.<locals>.receive" in names:
        return "waiting for the next wake-up"
    return "the rest (the kind, Celery's tracer, the log line, the pipe)"


def wall_shares(raw: str) -> dict[str, float]:
    """py-spy's --format raw (one `frame;frame;... count` a line) as shares of the main thread."""
    counts: collections.Counter = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            part = part_of_run(stack.split(";"))
            if part:
                counts[part] += int(count)
    total = sum(counts.values())
    return {part: round(count / total, 3) for part, count in counts.most_common()} if total else {}


def client_processes(bench) -> dict[int, int | None]:
    """{backend pid: the local process on the other end of its connection}."""
    server_port = f":{bench.db.info.port}"
    listed = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=False).stdout
    by_port = {}
    for line in listed.splitlines():
        fields, owner = line.split(), re.search(r"pid=(\d+)", line)
        if owner and len(fields) >= 5 and fields[4].endswith(server_port):
            by_port[int(fields[3].rsplit(":", 1)[1])] = int(owner.group(1))
    rows = bench.db.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return {pid: by_port.get(port) for pid, port in rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=12, help="py-spy's sampling time")
    parser.add_argument("--rate", type=int, default=250, help="py-spy's samples per second")
    parser.add_argument("--rows", type=int, help="rows the bench database holds (default: the standard profile's)")
    parser.add_argument("--database-url", default=bench_run.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=bench_run.DEFAULT_REDIS_URL)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--stock-port", type=int, help="the stock gunicorn, started too (default: --port + 1)")
    args = parser.parse_args(argv)
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)  # as bench.run: this process loads no Django
    settings = argparse.Namespace(
        database_url=args.database_url, redis_url=args.redis_url, port=args.port, stock_port=args.stock_port,
        rows=args.rows, rounds=1, only=["1"], output_dir=None, time_limit=1800, keep_logs=False,
    )  # fmt: skip
    bench = bench_run.Bench(settings, bench_run.PROFILES["standard"], "standard")
    try:
        bench.ensure_database()
        bench.prepare()
        bench.reset_queues()
        bench.clean_tasks()
        bench.start_web()
        bench.start_workers()
        bench.submit_bulk(50)  # warm-up: every pool process imports and connects once
        time.sleep(2)
        bench.clean_tasks()
        pool, web = bench.tf_worker.children(), set(bench.web.children())
        backends = client_processes(bench)
        before = bench_run.cpu_seconds(backends)
        started = time.time()
        submitting = threading.Thread(target=bench.submit_bulk, args=(args.tasks,))
        submitting.start()
        time.sleep(min(1.0, args.seconds / 4))  # the first wake-ups are out
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as sampled:
            spy = subprocess.run(
                [PY_SPY, "record", "--idle", "--rate", str(args.rate), "--format", "raw", "--duration",
                 str(max(1, round(args.seconds))), "--output", sampled.name, "--pid", str(pool[0])],
                capture_output=True, text=True, timeout=args.seconds + 60, check=False,
            )  # fmt: skip
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed: {spy.stderr[-1000:]}")
            shares = wall_shares(sampled.read())
        submitting.join()
        owner = bench.prep["client_id"]
        deadline = time.monotonic() + max(120.0, args.tasks / 20)
        query = (
            "SELECT count(*), extract(epoch FROM max(finished_at)) FROM tasks_task"
            " WHERE owner_id = %s AND status = 'succeeded'"
        )
        while (done := bench.db.execute(query, [owner]).fetchone())[0] < args.tasks:
            if time.monotonic() > deadline:
                raise SystemExit(f"{done[0]} of {args.tasks} tasks succeeded in time")
            time.sleep(0.25)
        after = bench_run.cpu_seconds(backends)
        postgres: collections.Counter = collections.Counter()
        for backend, client in backends.items():
            served = "pool" if client in pool else "gunicorn" if client in web else "other"
            postgres[served] += (after.get(backend, 0) - before.get(backend, 0)) * 1000 / args.tasks
        result = {
            "tasks": args.tasks,
            "tasks_per_s": round(args.tasks / (float(done[1]) - started), 1),
            "pool_process_wall_shares": shares,
            "postgres_cpu_ms_per_task": {served: round(ms, 3) for served, ms in sorted(postgres.items())},
        }
    finally:
        bench.stop_all()
        if getattr(bench, "db", None) is not None:
            bench.clean_tasks()
            bench.reset_queues()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
