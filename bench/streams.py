"""What idle live-event streams cost the ASGI process: memory and CPU per open stream.

    .venv/bin/python -m bench.streams                  # 200 streams, 30 s idle each side
    .venv/bin/python -m bench.streams --streams 500 --seconds 60
    .venv/bin/python -m bench.streams --counts --streams 50 --changes 15   # open admin dashboards

--counts holds the staff's counts stream (`GET /api/tasks/counts/stream/`, the admin
dashboard's) instead, and --changes N makes N task changes a second meanwhile (a task due in
an hour submitted, then cancelled: two changes), from a process of its own; the result then
also says how many counts events each stream got (at most one a second, whatever the changes).

Starts uvicorn (one process, the deployed ASGI entry point) on the bench database, measures
its resident memory, threads and CPU seconds (from /proc) while idle with no stream, then opens
N owner streams (`GET /api/tasks/events/stream/`, each its own connection, held by one client
process with asyncio) and measures again while they sit idle (heartbeats and the table reads
every POLL_SECONDS included). Writes bench/results/streams.json and prints it.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import BASE_DIR, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, PYTHON, Service, log

RESULTS = BASE_DIR / "bench" / "results" / "streams.json"
COUNTS_RESULTS = BASE_DIR / "bench" / "results" / "streams-counts.json"
OWNER_PATH, COUNTS_PATH = "/api/tasks/events/stream/", "/api/tasks/counts/stream/"
# Run by `manage.py shell` for --changes: a task due in an hour submitted, then cancelled.
CHURN = """
import time
from datetime import timedelta
from django.utils import timezone
from apps.accounts.models import User
from apps.tasks import services
owner, _ = User.objects.get_or_create(email="churn@bench.local")
pause, end = 2 / {changes}, time.monotonic() + {seconds}
while time.monotonic() < end:
    spec = services.TaskSpec(kind="demo.noop", payload={{}}, run_at=timezone.now() + timedelta(hours=1))
    services.task_cancel(task=services.task_submit(owner=owner, spec=spec)[0], actor=owner)
    time.sleep(pause)
"""
PORT = 8795


def proc_figures(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "cpu_seconds": (int(stat[11]) + int(stat[12])) / ticks,  # utime + stime
    }


def idle(pid: int, seconds: float) -> dict:
    before = proc_figures(pid)
    time.sleep(seconds)
    after = proc_figures(pid)
    return {**after, "cpu_per_second": (after["cpu_seconds"] - before["cpu_seconds"]) / seconds}


async def hold_streams(
    port: int, token: str, count: int, seconds: float, ready: asyncio.Event, path: str = OWNER_PATH
) -> list[int]:
    """Open `count` streams, hold them `seconds` (+5) reading what comes; the events each got."""
    opened = 0

    async def one() -> int:
        nonlocal opened
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        while (await reader.readline()).strip():  # headers
            pass
        opened += 1
        if opened == count:
            ready.set()
        events, end = 0, time.monotonic() + seconds + 5
        try:
            while (left := end - time.monotonic()) > 0:
                try:
                    line = await asyncio.wait_for(reader.readline(), left)
                except TimeoutError:
                    break
                events += line.startswith(b"event: ")
        finally:
            writer.close()
        return events

    return list(await asyncio.gather(*(one() for _ in range(count))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--counts", action="store_true", help="the staff's counts stream (admin dashboards)")
    parser.add_argument("--changes", type=float, default=0, help="task changes a second while the streams are open")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    output = args.output or (COUNTS_RESULTS if args.counts else RESULTS)

    work = Path(tempfile.mkdtemp(prefix="taskflow-bench-streams-"))
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "warning",
        "STREAMS_PER_USER": str(args.streams + 10),
        "RATE_LIMIT_USER": "100000000/s",
        "TASKFLOW_VAR_DIR": str(work / "var"),
        "WORKER_METRICS_PORT": "0",
    }
    run = lambda *cmd: subprocess.run(  # noqa: E731
        [PYTHON, "manage.py", *cmd], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    )
    log("migrating the bench database")
    run("migrate", "--noinput")
    token = (
        run(
            "shell",
            "-c",
            "from apps.accounts.models import User; from rest_framework_simplejwt.tokens import AccessToken;"
            "u, _ = User.objects.get_or_create(email='streams@bench.local');"
            "u.is_staff = u.is_superuser = True; u.save();"  # the counts stream is staff's
            "print(AccessToken.for_user(u))",
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    command = [PYTHON, "-m", "uvicorn", "taskflow_site.asgi:application", "--port", str(args.port), "--no-access-log"]
    server = Service("uvicorn", command, env, work)
    server.start()
    server.wait_for_log(b"Application startup complete", timeout=60)
    pid = server.process.pid
    try:
        log(f"idle without streams for {args.seconds:.0f} s")
        without = idle(pid, args.seconds)

        path = COUNTS_PATH if args.counts else OWNER_PATH

        async def measure():
            ready = asyncio.Event()
            holder = asyncio.create_task(hold_streams(args.port, token, args.streams, args.seconds, ready, path))
            await asyncio.wait_for(ready.wait(), timeout=120)
            churn = None
            if args.changes:
                script = CHURN.format(changes=args.changes, seconds=args.seconds)
                churn = subprocess.Popen([PYTHON, "manage.py", "shell", "-c", script], cwd=BASE_DIR, env=env)
            log(f"{args.streams} streams open on {path}; {args.changes:g} changes/s for {args.seconds:.0f} s")
            figures = await asyncio.to_thread(idle, pid, args.seconds)
            if churn is not None:
                churn.wait(timeout=60)
            return figures, await holder

        with_streams, events = asyncio.run(measure())
    finally:
        server.stop()
    per_stream = {
        "memory_kb": round((with_streams["rss_mb"] - without["rss_mb"]) * 1024 / args.streams, 1),
        "cpu_ms_per_second": round(
            (with_streams["cpu_per_second"] - without["cpu_per_second"]) * 1000 / args.streams, 3
        ),
    }
    result = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "path": path,
        "streams": args.streams,
        "idle_seconds": args.seconds,
        "task_changes_per_second": args.changes,
        # Held seconds + 5; with --counts each stream's first event is the table on connect.
        "events_per_stream": {"min": min(events), "max": max(events), "held_seconds": args.seconds + 5},
        "without_streams": without,
        "with_streams": with_streams,
        "per_stream": per_stream,
        "threads_added": with_streams["threads"] - without["threads"],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
