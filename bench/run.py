"""TaskFlow against bare Celery and a user's stock DRF project, as ratios measured in one run.

    make bench                          # the standard run, a few minutes
    make bench BENCH_ARGS=--quick       # fewer rounds and shorter runs (a minute or two)
    make bench BENCH_ARGS=--full        # more rounds, longer runs, 10,000,000 tasks
    .venv/bin/python -m bench.run --help

Sets up what it needs on this machine's real stack: the PostgreSQL database `taskflow_bench`
(created and migrated, tasks and baseline rows seeded once and kept), Redis DB 8 (the
bench's own: flushed), gunicorn with deploy/gunicorn.conf.py and Celery workers started with
the same flags for both sides (WORKER_FLAGS). The API rows compare TaskFlow with bench/stock,
a stock `startproject` + DRF project (TokenAuthentication, a ModelViewSet, page-number
pagination) in the schema `stock` of the same database, under a second gunicorn with the
same command-line flags (gunicorn_flags()); both sides' CPU per request is read from /proc.
Every row pairs a TaskFlow measurement with a baseline measured in the same run, alternating
which goes first, several rounds; the figure
is the median of the per-round ratios, with their spread (min-max). Load comes from wrk, a
separate process, or from this process for the bulk and end-to-end rows; every loop is
bounded in count and in time, and only 127.0.0.1 is ever a target.

Writes bench/results/latest.json and latest.md; `python -m bench.readme` copies the table
into docs/performance.md.
"""

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import redis

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "bench"
DEFAULT_RESULTS = BENCH_DIR / "results"
WRK_SCRIPT = BENCH_DIR / "wrk" / "bench.lua"
PYTHON = sys.executable

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/taskflow_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"

# One set of flags for TaskFlow's worker and the bare Celery worker: the project's default
# concurrency (WORKER_CONCURRENCY=2), prefork, and Celery's default prefetch (4 unacked
# messages per process; row 1 is measured again with --prefetch-multiplier 1 on both sides).
# Late acks and ignored results are in both apps' configuration (taskflow_site/celery.py and
# bench/bare_celery.py); neither has a command-line flag.
WORKER_FLAGS = [
    "worker",
    "--pool",
    "prefork",
    "--concurrency",
    "2",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
    "--loglevel",
    "INFO",
]
TASKFLOW_QUEUE = "default"
NOOP_TASK = {"kind": "demo.noop", "payload": {"echo": 1}}
STOCK_ITEM = {"kind": "demo.noop", "title": "bench", "payload": {"echo": 1}}
# The API rows' other target beside the req/s ratio: CPU per request of the web workers.
CPU_MS_TARGET = 4.0
BULK_CHUNK = 1000  # TASK_BULK_MAX
POLL_SECONDS = 0.25
SQL_SEED_ROWS = 2_000_000
REFERENCE_LOOP = 1_000_000  # iterations of reference_loop_ms()'s loop
# Issue targets for rows 5 and 6, in server milliseconds (medians), at any table size.
ADMIN_CHANGELIST_MS = 100
ADMIN_DASHBOARD_COLD_MS = 150
# Rows F (fair sharing): the two worker processes, each with WORKER_FLAGS; owner A's
# flood of 50 ms tasks, owner B's three no-ops after it, and the targets: B's three all
# succeed within 10 s with the fair claim on, which costs under 10 % of the throughput.
FAIR_WORKERS = 2
FLOOD_TASK = {"kind": "demo.sleep", "payload": {"seconds": 0.05, "steps": 1}}
SMALL_OWNER_TASKS = 3
SMALL_OWNER_WITHIN_S = 10.0
FAIR_COST_TARGET = 0.9
# The sides of rows F, as TASK_FAIR_CLAIM on the workers: the fair claim against the claim of
# the task the wake-up names (first come, first served).
FAIR_SIDES = {"taskflow": "true", "baseline": "false"}
SIDE_LABELS = {"taskflow": "fair on", "baseline": "fair off"}


@dataclass(frozen=True)
class Profile:
    rounds: int
    e2e_tasks: int
    bulk_tasks: int
    wrk_seconds: float
    wrk_connections: tuple[int, ...]
    admin_requests: int
    table_rows: int
    limit_seconds: int
    redis_requests: int
    fair_flood: int  # row F1: owner A's bulk of 50 ms tasks (the 2,000)


PROFILES = {
    "smoke": Profile(1, 40, 200, 1, (4,), 1, 2_000, 1, 2_000, 40),
    "quick": Profile(3, 1_000, 10_000, 3, (16, 64), 3, 1_000_000, 3, 50_000, 500),
    "standard": Profile(5, 2_000, 10_000, 5, (16, 64), 5, 1_000_000, 5, 100_000, 2_000),
    "full": Profile(7, 10_000, 10_000, 8, (16, 64), 7, 10_000_000, 8, 200_000, 2_000),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values) -> float:
    return statistics.median(values)


# --- Processes --------------------------------------------------------------------------


class Service:
    """A process of ours (gunicorn, a worker), in its own process group, logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict, log_dir: Path):
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process = None

    def start(self) -> "Service":
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 (open as long as the process)
        self.process = subprocess.Popen(
            self.command,
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_for_log(self, marker: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            if marker in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def children(self) -> list[int]:
        """Direct children of the main process (gunicorn workers, Celery pool processes)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if getattr(self, "log_file", None):
            self.log_file.close()


def gunicorn_flags(port: int) -> list[str]:
    """The command-line flags both web sides run with: the processes and threads that
    deploy/gunicorn.conf.py gives TaskFlow (WEB_CONCURRENCY, GUNICORN_THREADS and their
    defaults, computed the same way), so that neither side has more of the machine."""
    workers = int(os.environ.get("WEB_CONCURRENCY", min((os.cpu_count() or 1) * 2 + 1, 4)))
    threads = int(os.environ.get("GUNICORN_THREADS", 4))
    return ["--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
            "--bind", f"127.0.0.1:{port}"]  # fmt: skip


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def reference_loop_ms() -> float:
    """This machine's speed at pure Python, for comparing absolute figures between runs on
    different machines (the CPU-per-request targets are absolute milliseconds): the CPU time of
    a fixed loop, the best of five."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        sum(i * i for i in range(REFERENCE_LOOP))
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def cpu_seconds(pids) -> dict[int, float]:
    """User + system CPU time of each live process among `pids`, from /proc."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots; a process that appeared in between counts whole."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most resident memory the process ever had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# --- The bench ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args, profile: Profile, profile_name: str):
        self.args = args
        self.profile = profile
        self.profile_name = profile_name
        self.database_url = args.database_url
        self.redis_url = args.redis_url
        self.port = args.port
        self.deadline = time.monotonic() + args.time_limit
        self.work_dir = Path(tempfile.mkdtemp(prefix="taskflow-bench-"))
        self.services: list[Service] = []
        self.redis = redis.Redis.from_url(self.redis_url)
        # bench.bare_celery reads its broker from here when this process publishes.
        os.environ["BENCH_REDIS_URL"] = self.redis_url
        self.results = {"rows": [], "limits": {}, "notes": []}

    # environment shared by every process of the stack
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            BENCH_REDIS_URL=self.redis_url,
            DEBUG="false",
            SECRET_KEY="bench-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz",
            ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
            SECURE_SSL_REDIRECT="false",
            SECURE_HSTS_SECONDS="0",
            # The bench user sends thousands of requests a second: lift the rate limits
            # (the limiter still runs, with its Redis call, on both sides of every API row).
            RATE_LIMIT_USER="100000000/s",
            RATE_LIMIT_ANON="100000000/s",
            RATE_LIMIT_AUTH="100000000/s",
            # gunicorn recycles a worker after GUNICORN_MAX_REQUESTS; a recycled worker would
            # hide its peak memory (row 7), so not during a bench.
            GUNICORN_MAX_REQUESTS="10000000",
            HOST="127.0.0.1",
            PORT=str(self.port),
            TASKFLOW_VAR_DIR=str(self.work_dir / "var"),
            WORKER_METRICS_PORT="0",
            EMAIL_URL="consolemail://",
            PYTHONUNBUFFERED="1",
        )
        return env

    def check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise RuntimeError(f"the bench ran past its --time-limit of {self.args.time_limit}s (at {what})")

    def manage(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [PYTHON, *args], cwd=BASE_DIR, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    # --- set-up ---

    def ensure_database(self) -> None:
        parts = urlsplit(self.database_url)
        name = parts.path.lstrip("/")
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                log(f"creating database {name}")
                conn.execute(f'CREATE DATABASE "{name}"')
        log("migrating")
        self.manage("manage.py", "migrate", "--noinput")

    def prepare(self) -> None:
        rows = self.args.rows or self.profile.table_rows
        log(f"preparing users and {rows:,} rows per table (seeded once, kept between runs)")
        # Past a couple of million rows the tasks are generated inside PostgreSQL (bench.seed_sql).
        sql_seed = ["--sql-seed"] if rows >= SQL_SEED_ROWS else []
        out = self.manage("-m", "bench.prepare", "--rows", str(rows), *sql_seed, timeout=3600)
        self.prep = json.loads(out.strip().splitlines()[-1])
        self.db = psycopg.connect(self.database_url, autocommit=True)
        log(f"preparing the stock baseline (schema stock): {rows:,} items")
        done = subprocess.run(
            [PYTHON, "-m", "bench.stock.prepare", "--rows", str(rows)],
            cwd=BASE_DIR, env=self.stock_env(), capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"bench.stock.prepare failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        self.stock = json.loads(done.stdout.strip().splitlines()[-1])
        self.prep["baseline_rows"] = self.stock["rows"]

    def stock_env(self) -> dict:
        """The stock project's processes: its own settings, none of TaskFlow's environment."""
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(
            DJANGO_SETTINGS_MODULE="bench.stock.settings", STOCK_DATABASE_URL=self.database_url, PYTHONUNBUFFERED="1"
        )
        return env

    def start_web(self) -> None:
        flags = gunicorn_flags(self.port)
        web = Service(
            "gunicorn",
            [PYTHON, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", *flags, "taskflow_site.wsgi:application"],
            self.env(),
            self.work_dir,
        ).start()
        self.services.append(web)
        self.web = web
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = self.http("GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or web.process.poll() is not None:
                raise RuntimeError(f"gunicorn did not answer /healthz:\n{web.tail()}")
            time.sleep(0.2)
        log(f"gunicorn up on 127.0.0.1:{self.port} with {len(web.children())} workers")
        self.stock_port = self.args.stock_port or self.port + 1
        stock = Service(
            "gunicorn-stock",
            [PYTHON, "-m", "gunicorn", *gunicorn_flags(self.stock_port), "bench.stock.wsgi:application"],
            self.stock_env(),
            self.work_dir,
        ).start()
        self.services.append(stock)
        self.stock_web = stock
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = self.http("GET", "/api/items/?page_size=1", port=self.stock_port)
                if status == 401:  # up, and asking for the token
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or stock.process.poll() is not None:
                raise RuntimeError(f"the stock gunicorn did not answer:\n{stock.tail()}")
            time.sleep(0.2)
        log(f"stock gunicorn up on 127.0.0.1:{self.stock_port} with {len(stock.children())} workers")

    def start_workers(self, prefetch: int | None = None) -> None:
        """TaskFlow's and the bare worker, with WORKER_FLAGS (and --prefetch-multiplier if given)."""
        base = [PYTHON, "-m", "celery"]
        flags = [*WORKER_FLAGS, "--prefetch-multiplier", str(prefetch)] if prefetch else WORKER_FLAGS
        suffix = f"-prefetch-{prefetch}" if prefetch else ""
        self.tf_worker = Service(
            f"worker-taskflow{suffix}",
            [*base, "--app", "taskflow_site", *flags, "--queues", TASKFLOW_QUEUE, "--hostname", "bench-tf@%h"],
            self.env(),
            self.work_dir,
        ).start()
        # Without DJANGO_SETTINGS_MODULE: Celery would otherwise load Django (its Django fixup)
        # and with it TaskFlow's logging, and the baseline would no longer be bare Celery.
        bare_env = {k: v for k, v in self.env().items() if k != "DJANGO_SETTINGS_MODULE"}
        self.bare_worker = Service(
            f"worker-bare{suffix}",
            [*base, "--app", "bench.bare_celery", *flags, "--hostname", "bench-bare@%h"],
            bare_env,
            self.work_dir,
        ).start()
        self.services += [self.tf_worker, self.bare_worker]
        for worker in (self.tf_worker, self.bare_worker):
            worker.wait_for_log(b" ready.")
        log("workers ready (same flags: " + " ".join(flags[1:]) + ")")

    def stop_workers(self) -> None:
        for worker in (self.tf_worker, self.bare_worker):
            worker.stop()
            self.services.remove(worker)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    # --- helpers ---

    def http(
        self, method: str, path: str, body=None, key: str | None = None, conn=None, port=None
    ) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=120)
        headers = {}
        if key:
            headers["Authorization"] = f"Api-Key {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()

    def vacuum(self) -> None:
        self.db.execute("VACUUM (ANALYZE) tasks_task, tasks_taskevent, stock.items_item")

    def reset_queues(self) -> None:
        """Drop every message and counter: Redis DB of the bench only (see --redis-url)."""
        self.redis.flushdb()

    def owner_ids(self) -> list[int]:
        """The bench's task owners: the client (owner A) and the fair-sharing rows' others."""
        return [owner["id"] for owner in self.prep["owners"]]

    def clean_tasks(self) -> None:
        """Delete what the bench wrote. Requests wrk gave up on at its deadline may still be
        committing on the server: try again until the tables hold still."""
        owners = self.owner_ids()
        for _attempt in range(20):
            try:
                with self.db.transaction():
                    self.db.execute(
                        "DELETE FROM tasks_taskevent WHERE task_id IN "
                        "(SELECT id FROM tasks_task WHERE owner_id = ANY(%s))",
                        [owners],
                    )
                    self.db.execute("DELETE FROM tasks_task WHERE owner_id = ANY(%s)", [owners])
                self.db.execute("DELETE FROM stock.items_item WHERE kind <> 'seeded'")
                return
            except psycopg.errors.ForeignKeyViolation:
                time.sleep(0.2)
        raise RuntimeError("the bench's tasks could not be deleted: something keeps writing them")

    def submit_bulk(self, count: int, *, task: dict = NOOP_TASK, key: str | None = None) -> None:
        """`count` copies of `task` via the bulk API, as the client (or the owner of `key`)."""
        # A connection per call: gunicorn drops keep-alive connections idle for 5 s.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        for start in range(0, count, BULK_CHUNK):
            size = min(BULK_CHUNK, count - start)
            status, body = self.http(
                "POST", "/api/tasks/bulk/", {"tasks": [task] * size}, key=key or self.prep["client_key"], conn=conn
            )
            if status != 201:
                raise RuntimeError(f"bulk submission answered {status}: {body[:500]!r}\n{self.web.tail()}")
        conn.close()

    def publish_bare(self, count: int) -> None:
        from bench.bare_celery import bare_noop

        for n in range(count):
            bare_noop.apply_async(args=[n])

    def pair_rounds(self, name: str, taskflow, baseline, rounds: int) -> list[dict]:
        """Run both sides `rounds` times, alternating which goes first."""
        samples = []
        for index in range(rounds):
            self.check_time(name)
            order = [("taskflow", taskflow), ("baseline", baseline)]
            if index % 2:
                order.reverse()
            measured = {side: run() for side, run in order}
            samples.append(measured)
            shown = {side: value["rate"] if isinstance(value, dict) else value for side, value in measured.items()}
            log(f"  {name} round {index + 1}/{rounds}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        return samples

    # --- physical limits ---

    def measure_limits(self) -> None:
        log("physical limits: redis-benchmark LPUSH/RPOP, pgbench INSERT+UPDATE")
        redis_parts = urlsplit(self.redis_url)
        dbnum = (redis_parts.path or "/0").lstrip("/") or "0"
        out = subprocess.run(
            ["redis-benchmark", "-h", redis_parts.hostname or "127.0.0.1", "-p", str(redis_parts.port or 6379),
             "--dbnum", dbnum, "-c", "16", "-n", str(self.profile.redis_requests), "-t", "lpush,rpop", "--csv"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            cells = [cell.strip('"') for cell in line.split(",")]
            if cells and cells[0] in ("LPUSH", "RPOP"):
                self.results["limits"][f"redis_{cells[0].lower()}_per_s"] = float(cells[1])
        self.redis.delete("mylist")

        # A logged table like tasks_task: one transaction that inserts a row and updates it.
        self.db.execute("DROP TABLE IF EXISTS bench_limit")
        self.db.execute("CREATE TABLE bench_limit (id bigserial PRIMARY KEY, state text NOT NULL)")
        script = self.work_dir / "insert_update.sql"
        script.write_text(
            "BEGIN;\n"
            "INSERT INTO bench_limit (state) VALUES ('queued') RETURNING id AS row_id \\gset\n"
            "UPDATE bench_limit SET state = 'succeeded' WHERE id = :row_id;\n"
            "COMMIT;\n"
        )
        parts = urlsplit(self.database_url)
        out = subprocess.run(
            ["pgbench", "-n", "-h", parts.hostname, "-p", str(parts.port or 5432), "-U", parts.username or "postgres",
             "-c", "4", "-j", "2", "-T", str(self.profile.limit_seconds), "-f", str(script), parts.path.lstrip("/")],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        tps = re.search(r"tps = ([\d.]+)", out)
        self.results["limits"]["pg_insert_update_per_s"] = float(tps.group(1)) if tps else None
        self.db.execute("DROP TABLE bench_limit")

    # --- rows ---

    def row_bulk(self) -> None:
        count = self.profile.bulk_tasks
        log(f"row 2: bulk submission of {count:,} tasks (no worker) vs {count:,} bare apply_async")

        def taskflow():
            self.clean_tasks()
            self.reset_queues()
            started = time.perf_counter()
            self.submit_bulk(count)
            rate = count / (time.perf_counter() - started)
            queued = self.db.execute(
                "SELECT count(*) FROM tasks_task WHERE owner_id = %s AND status = 'queued'", [self.prep["client_id"]]
            ).fetchone()[0]
            if queued != count:
                raise RuntimeError(f"bulk: {queued} of {count} tasks queued")
            return round(rate, 1)

        def baseline():
            self.reset_queues()
            started = time.perf_counter()
            self.publish_bare(count)
            return round(count / (time.perf_counter() - started), 1)

        self.submit_bulk(min(count, BULK_CHUNK))  # warm-up (imports, connections)
        self.publish_bare(100)
        samples = self.pair_rounds("bulk", taskflow, baseline, self.profile.rounds)
        self.clean_tasks()
        self.reset_queues()
        self.add_row(
            "2",
            f"bulk submission alone: {count:,} tasks via `/api/tasks/bulk/` ({BULK_CHUNK:,} per request), no worker",
            f"bare Celery: {count:,} `apply_async` publishes",
            "tasks/s",
            samples,
            target=0.7,
            size=count,
        )

    def wrk(self, *, method: str, path: str, authorization: str, connections: int, web: Service, body=None) -> dict:
        """One wrk run against `web` (TaskFlow's gunicorn or the stock one): its rate, latency,
        and the CPU its worker processes spent per request (user + system, from /proc)."""
        seconds = self.profile.wrk_seconds
        port = self.stock_port if web is self.stock_web else self.port
        threads = 2
        # Bounded in time (-d) and in count: no thread sends more than it could in the time at
        # 5,000 requests/s.
        env = dict(
            os.environ,
            BENCH_METHOD=method,
            BENCH_PATH=path,
            BENCH_AUTHORIZATION=authorization,
            BENCH_BODY=json.dumps(body) if body is not None else "",
            BENCH_MAX_PER_THREAD=str(int(5000 * seconds / threads) + 1),
        )
        workers = web.children()
        cpu_before = cpu_seconds(workers)
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
             "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, env=env, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
        cpu = cpu_spent(cpu_before, cpu_seconds(workers))
        line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
        result = json.loads(line.removeprefix("BENCH_JSON "))
        if result["non_2xx"] or result["socket_errors"] or result["timeouts"]:
            raise RuntimeError(f"wrk {method} {path}: errors in {result}")
        result["rate"] = round(result["requests"] / result["duration_s"], 1)
        result["cpu_ms"] = round(cpu / max(result["requests"], 1) * 1000, 3)
        return result

    def row_post(self) -> None:
        log("row 3: POST /api/tasks/ vs the stock DRF project's insert, wrk")
        tf_auth, stock_auth = f"Api-Key {self.prep['client_key']}", f"Token {self.stock['token']}"
        for connections in self.profile.wrk_connections:

            def taskflow(connections=connections):
                self.clean_tasks()
                self.reset_queues()
                return self.wrk(
                    method="POST", path="/api/tasks/", authorization=tf_auth, connections=connections,
                    web=self.web, body=NOOP_TASK,
                )  # fmt: skip

            def baseline(connections=connections):
                self.clean_tasks()
                return self.wrk(
                    method="POST", path="/api/items/", authorization=stock_auth, connections=connections,
                    web=self.stock_web, body=STOCK_ITEM,
                )  # fmt: skip

            taskflow()  # warm-up of every gunicorn worker and thread, both endpoints
            baseline()
            samples = self.pair_rounds(f"post c={connections}", taskflow, baseline, self.profile.rounds)
            self.add_row(
                f"3 ({connections} conn.)",
                f"`POST /api/tasks/`, {connections} connections",
                "stock DRF project (startproject middleware, TokenAuthentication, ModelViewSet), one INSERT",
                "req/s",
                [{side: s[side]["rate"] for side in s} for s in samples],
                target=1.0,
                latency=samples,
                latency_target=2.0,
            )
        self.clean_tasks()
        self.reset_queues()

    def row_list(self) -> None:
        log("row 4: GET /api/tasks/ first page vs the stock DRF project's list, wrk")
        connections = max(self.profile.wrk_connections[0], 1)
        tf_auth, stock_auth = f"Api-Key {self.prep['staff_key']}", f"Token {self.stock['token']}"

        def taskflow():
            return self.wrk(
                method="GET", path="/api/tasks/", authorization=tf_auth, connections=connections, web=self.web
            )

        def baseline():
            return self.wrk(
                method="GET", path="/api/items/", authorization=stock_auth, connections=connections, web=self.stock_web
            )

        taskflow()
        baseline()
        samples = self.pair_rounds("list", taskflow, baseline, self.profile.rounds)
        self.add_row(
            "4",
            f"`GET /api/tasks/` first page of 20, {self.prep['task_rows']:,} tasks, {connections} connections",
            f"stock DRF project's list (page-number pagination, 20 rows), {self.prep['baseline_rows']:,} rows",
            "req/s",
            [{side: s[side]["rate"] for side in s} for s in samples],
            target=1.0,
            latency=samples,
        )

    def row_admin(self) -> None:
        log("rows 5-6: admin changelist vs stock ModelAdmin; dashboard")
        out = self.manage(
            "-m", "bench.admin_pages", "--rounds", str(self.profile.rounds), "--requests",
            str(self.profile.admin_requests), "--staff-email", "bench-staff@bench.taskflow.local",
        )  # fmt: skip
        line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
        data = json.loads(line.removeprefix("BENCH_JSON "))
        labels = {"changelist": "unfiltered", "changelist_failed": "`status=failed`"}
        for name, rounds in data["pairs"].items():
            self.add_row(
                f"5 ({labels[name].strip('`')})",
                f"admin task changelist, {labels[name]}, {self.prep['task_rows']:,} tasks",
                "stock `ModelAdmin`, same table and data",
                "ms",
                [{side: round(value, 2) for side, value in r.items()} for r in rounds],
                target=10.0,
                lower_is_better=True,
            )
            # Issue target: a median under ADMIN_CHANGELIST_MS of server time, at any table size.
            row = self.results["rows"][-1]
            cpu = data.get("cpu_ms", {}).get(name)
            if cpu:
                row["taskflow_cpu_ms"], row["baseline_cpu_ms"] = round(cpu["taskflow"], 1), round(cpu["baseline"], 1)
            row["target_text"] = f"median < {ADMIN_CHANGELIST_MS} ms (stock for reference)"
            row["met"] = row["taskflow_median"] < ADMIN_CHANGELIST_MS
        dashboard = data["dashboard"]
        if dashboard.get("skipped"):
            self.results["notes"].append(f"Row 6 skipped: {dashboard['skipped']}.")
            self.results["rows"].append({"id": "6", "skipped": dashboard["skipped"]})
            return
        for state in ("cold", "warm"):
            values = sorted(dashboard[f"{state}_ms"])
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            self.results["rows"].append(
                {
                    "id": f"6 ({state})",
                    "taskflow": (
                        "admin dashboard, aggregates recomputed (cache dropped before each request)"
                        if state == "cold"
                        else "admin dashboard, aggregates cached"
                    )
                    + f", {self.prep['task_rows']:,} tasks",
                    "unit": "ms",
                    "median": round(median(values), 1),
                    "p95": round(p95, 1),
                    "samples": [round(v, 2) for v in dashboard[f"{state}_ms"]],
                    "cpu_ms": round(dashboard.get(f"{state}_cpu_ms", 0), 1),
                    "target": f"median < {ADMIN_DASHBOARD_COLD_MS} ms" if state == "cold" else "report",
                    "met": median(values) < ADMIN_DASHBOARD_COLD_MS if state == "cold" else None,
                }
            )

    def database_backends(self) -> list[int]:
        """PostgreSQL backends serving the bench database (the web's and the workers'), not ours."""
        rows = self.db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [pid for (pid,) in rows]

    def cpu_snapshot(self, side: str) -> dict:
        worker = self.tf_worker if side == "taskflow" else self.bare_worker
        snapshot = {"worker main": cpu_seconds([worker.process.pid]), "pool": cpu_seconds(worker.children())}
        # This process: the bare side's publisher (apply_async), TaskFlow's HTTP client.
        snapshot["submitter"] = cpu_seconds([os.getpid()])
        if side == "taskflow":
            snapshot["PostgreSQL"] = cpu_seconds(self.database_backends())
            snapshot["gunicorn"] = cpu_seconds(self.web.children())
        return snapshot

    def row_end_to_end(self, prefetch: int | None = None) -> None:
        count = self.profile.e2e_tasks
        which = f"prefetch {prefetch}" if prefetch else "Celery's default prefetch (4)"
        log(f"row 1 ({which}): end to end, {count:,} demo.noop via the bulk API vs {count:,} bare apply_async")
        owner = self.prep["client_id"]
        timeout = max(120.0, count / 20)
        from bench.bare_celery import COUNTER_KEY, LAST_KEY

        # CPU per task of each part (from /proc, the steadiest figure on a shared machine):
        # the worker's main process, its pool, the submitting process (this one: the bare
        # side's apply_async calls, TaskFlow's HTTP requests), and on TaskFlow's side the
        # PostgreSQL backends and gunicorn (the bulk submission) too.
        cpu: dict[str, list[dict]] = {"taskflow": [], "baseline": []}

        def measured(side: str, run) -> float:
            before = self.cpu_snapshot(side)
            rate = run()
            after = self.cpu_snapshot(side)
            cpu[side].append({part: cpu_spent(before[part], after[part]) * 1000 / count for part in before})
            return rate

        # Both sides poll slowly (polling must not load the machine it measures) and take
        # the end from what the last task recorded: its finished_at, or the bare task's stamp.
        def taskflow_run():
            started = time.time()
            self.submit_bulk(count)
            while True:
                done, failed, last = self.db.execute(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'), "
                    "extract(epoch FROM max(finished_at)) FROM tasks_task WHERE owner_id = %s",
                    [owner],
                ).fetchone()
                if done == count:
                    return round(count / (float(last) - started), 1)
                if failed or time.time() - started > timeout:
                    raise RuntimeError(f"end to end: {done} succeeded, {failed} failed of {count}")
                time.sleep(POLL_SECONDS)

        def taskflow():
            self.clean_tasks()
            self.reset_queues()
            return measured("taskflow", taskflow_run)

        def baseline_run():
            started = time.time()
            self.publish_bare(count)
            while int(self.redis.get(COUNTER_KEY) or 0) < count:
                if time.time() - started > timeout:
                    raise RuntimeError(f"bare Celery: {self.redis.get(COUNTER_KEY)} of {count} executed")
                time.sleep(POLL_SECONDS)
            return round(count / (float(self.redis.get(LAST_KEY)) - started), 1)

        def baseline():
            self.reset_queues()
            return measured("baseline", baseline_run)

        # Warm-up: every pool process imports and connects once.
        self.submit_bulk(50)
        self.publish_bare(50)
        time.sleep(3)
        samples = self.pair_rounds(f"end to end, {which}", taskflow, baseline, self.profile.rounds)
        cpu_ms = {
            side: {part: round(median(run[part] for run in runs), 3) for part in runs[0]} for side, runs in cpu.items()
        }
        for side in cpu_ms:
            cpu_ms[side]["total"] = round(sum(cpu_ms[side].values()), 3)
        self.add_row(
            f"1 (prefetch {prefetch})" if prefetch else "1",
            f"end to end: {count:,} `demo.noop` via the bulk API until all `succeeded`",
            f"bare Celery: {count:,} no-op `apply_async`, late acks, results ignored, until all executed"
            + (f", prefetch {prefetch} on both sides" if prefetch else ", Celery's default prefetch on both sides"),
            "tasks/s",
            samples,
            target=0.5,
            size=count,
            cpu_ms_per_task=cpu_ms,
            cpu_samples=cpu,
        )
        self.clean_tasks()

    # --- rows F: fair sharing ---

    def start_fair_workers(self, side: str, label: str) -> list[Service]:
        """The issue's two TaskFlow worker processes (WORKER_FLAGS each), with the fair claim
        on or off (TASK_FAIR_CLAIM) as `side` says."""
        env = {**self.env(), "TASK_FAIR_CLAIM": FAIR_SIDES[side]}
        workers = [
            Service(
                f"worker-fair-{label}-{number}",
                [PYTHON, "-m", "celery", "--app", "taskflow_site", *WORKER_FLAGS, "--queues", TASKFLOW_QUEUE,
                 "--hostname", f"bench-fair{number}@%h"],
                env,
                self.work_dir,
            ).start()
            for number in range(1, FAIR_WORKERS + 1)
        ]  # fmt: skip
        self.services += workers
        for worker in workers:
            worker.wait_for_log(b" ready.")
        return workers

    def stop_fair_workers(self, workers: list[Service]) -> None:
        for worker in workers:
            worker.stop()
            self.services.remove(worker)

    def fair_cpu_snapshot(self, workers: list[Service]) -> dict:
        """Row 1's CPU parts (/proc) for the fair rows' two workers, both sides TaskFlow's."""
        return {
            "worker main": cpu_seconds([worker.process.pid for worker in workers]),
            "pool": cpu_seconds([pid for worker in workers for pid in worker.children()]),
            "submitter": cpu_seconds([os.getpid()]),
            "PostgreSQL": cpu_seconds(self.database_backends()),
            "gunicorn": cpu_seconds(self.web.children()),
        }

    def wait_succeeded(self, owners: list[int], count: int, *, started: float, timeout: float, what: str) -> bool:
        """Poll (slowly) until the `count` tasks of `owners` all succeeded (True), or `timeout`
        passed (False: rows F report how far they got rather than stop the bench)."""
        while True:
            by_status = dict(
                self.db.execute(
                    "SELECT status, count(*) FROM tasks_task WHERE owner_id = ANY(%s) GROUP BY status", [owners]
                ).fetchall()
            )
            if by_status.get("succeeded", 0) == count:
                return True
            if by_status.get("failed") or by_status.get("cancelled"):
                raise RuntimeError(f"{what}: of {count} tasks, by status {by_status}")
            if time.time() - started > timeout:
                log(f"  {what}: not done after {timeout:.0f} s; of {count} tasks, by status {by_status}")
                return False
            time.sleep(POLL_SECONDS)

    def succeeded(self, owners: list[int]) -> int:
        query = "SELECT count(*) FROM tasks_task WHERE owner_id = ANY(%s) AND status = 'succeeded'"
        return self.db.execute(query, [owners]).fetchone()[0]

    def last_finish(self, owners: list[int]) -> float:
        """Epoch of the last finish among the tasks of `owners` (what the end is timed by)."""
        query = "SELECT extract(epoch FROM max(finished_at)) FROM tasks_task WHERE owner_id = ANY(%s)"
        return float(self.db.execute(query, [owners]).fetchone()[0])

    def fair_start(self) -> None:
        """Before each measurement of rows F: no task of the bench's, no message, and no dead
        entry in the index of claimable tasks. The fair claim reads that index from an owner's
        oldest entry, and entries of tasks claimed since the last VACUUM stay in front of the
        live ones (autovacuum is off here; and while any transaction on the server holds an
        xid, index scans cannot mark them dead either): left alone, each round would start
        behind every task the rounds before it ran (docs/fair-sharing.md, "Measured")."""
        self.reset_queues()
        self.settle_workers()
        self.clean_tasks()
        self.db.execute("VACUUM (ANALYZE) tasks_task")

    def settle_workers(self, timeout: float = 120) -> None:
        """After a measurement not done in time the workers still hold prefetched wake-ups
        (the broker's are dropped): wait until they have run theirs (nothing of the bench's
        running, nothing finishing for a second), or their claims and events would race
        the deletion of the tasks."""
        owners = self.owner_ids()
        query = (
            "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE finished_at IS NOT NULL) "
            "FROM tasks_task WHERE owner_id = ANY(%s)"
        )
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            running, finished = self.db.execute(query, [owners]).fetchone()
            if running == 0 and finished == last:
                return
            last = finished
            time.sleep(1.0)
        log(f"  the workers still ran the bench's tasks after {timeout:.0f} s")

    def fair_warm_up(self) -> None:
        """Every pool process imports, connects and prepares its statements once."""
        self.clean_tasks()
        self.reset_queues()
        started = time.time()
        self.submit_bulk(50)
        self.wait_succeeded(self.owner_ids()[:1], 50, started=started, timeout=120, what="rows F, warm-up")

    def fair_flood(self) -> dict:
        """Row F1, one side: owner A bulk-submits the flood, owner B then posts three no-ops;
        B's waits (created to finished, from the table) and A's time until all its succeeded."""
        owner_a, owner_b = self.prep["owners"][:2]
        flood = self.profile.fair_flood
        self.fair_start()
        started = time.time()
        self.submit_bulk(flood, task=FLOOD_TASK, key=owner_a["key"])
        for _ in range(SMALL_OWNER_TASKS):
            status, body = self.http("POST", "/api/tasks/", NOOP_TASK, key=owner_b["key"])
            if status != 201:
                raise RuntimeError(f"owner B's POST answered {status}: {body[:500]!r}")
        # First come, first served, B waits for the whole flood: 4 slots, 50 ms each, and room.
        timeout = max(120.0, flood * FLOOD_TASK["payload"]["seconds"])
        owners = [owner_a["id"], owner_b["id"]]
        done = self.wait_succeeded(owners, flood + SMALL_OWNER_TASKS, started=started, timeout=timeout, what="row F1")
        # Not done in time: a wait still going counts until now (a lower bound), as does A's time.
        waits = self.db.execute(
            "SELECT extract(epoch FROM coalesce(finished_at, now()) - created_at) FROM tasks_task "
            "WHERE owner_id = %s ORDER BY created_at",
            [owner_b["id"]],
        ).fetchall()
        return {
            "b_waits_s": [round(float(wait), 3) for (wait,) in waits],
            "a_total_s": round((self.last_finish([owner_a["id"]]) if done else time.time()) - started, 2),
            "a_succeeded": self.succeeded([owner_a["id"]]),
            "done": done,
        }

    def fair_throughput(self, owners: list[dict], workers: list[Service]) -> dict:
        """Row F2, one side: e2e_tasks no-ops bulk-submitted, shared out among `owners` in
        turn (each owner's share in one go), until all succeeded: tasks/s, CPU ms per task."""
        count = self.profile.e2e_tasks
        shares = [count // len(owners) + (index < count % len(owners)) for index in range(len(owners))]
        ids = [owner["id"] for owner in owners]
        self.fair_start()
        before = self.fair_cpu_snapshot(workers)
        started = time.time()
        for owner, share in zip(owners, shares, strict=True):
            self.submit_bulk(share, key=owner["key"])
        done = self.wait_succeeded(ids, count, started=started, timeout=max(120.0, count / 20), what="row F2")
        after = self.fair_cpu_snapshot(workers)
        # Not done in time: the rate and CPU of the tasks that succeeded by then.
        finished = count if done else max(self.succeeded(ids), 1)
        rate = round(finished / (self.last_finish(ids) - started), 1)
        cpu = {part: cpu_spent(before[part], after[part]) * 1000 / finished for part in before}
        return {"rate": rate, "cpu": cpu, "done": done, "succeeded": finished}

    def rows_fair(self) -> None:
        """Rows F: with two worker processes, the fair claim on (TASK_FAIR_CLAIM=true) against
        off, alternating which goes first; each side's workers are started for it and measure
        F1, F2 and F2 with many owners one after the other."""
        owners = self.prep["owners"]
        flood, count = self.profile.fair_flood, self.profile.e2e_tasks
        log(
            f"rows F: {FAIR_WORKERS} workers, fair claim on vs off; F1 {flood:,} x 50 ms of owner A then "
            f"{SMALL_OWNER_TASKS} no-ops of owner B; F2 {count:,} no-ops of 1 and of {len(owners)} owners"
        )
        variants = {"F2": owners[:1], f"F2 ({len(owners)} owners)": owners}
        rounds = []
        for index in range(self.profile.rounds):
            self.check_time("rows F")
            order = ["taskflow", "baseline"] if index % 2 == 0 else ["baseline", "taskflow"]
            measured = {"F1": {}, **{row_id: {} for row_id in variants}}
            for side in order:
                workers = self.start_fair_workers(side, f"{SIDE_LABELS[side].replace(' ', '-')}-{index + 1}")
                try:
                    self.fair_warm_up()
                    measured["F1"][side] = self.fair_flood()
                    for row_id, variant in variants.items():
                        measured[row_id][side] = self.fair_throughput(variant, workers)
                finally:
                    self.stop_fair_workers(workers)
            rounds.append(measured)
            log(
                f"  fair round {index + 1}/{self.profile.rounds}: "
                + "; ".join(
                    f"{SIDE_LABELS[side]}: B waits {measured['F1'][side]['b_waits_s']} s, "
                    f"A {measured['F1'][side]['a_total_s']} s{'' if measured['F1'][side]['done'] else ' (not done)'}, "
                    + ", ".join(
                        f"{row_id} {measured[row_id][side]['rate']} tasks/s"
                        + ("" if measured[row_id][side]["done"] else " (not done)")
                        for row_id in variants
                    )
                    for side in ("taskflow", "baseline")
                )
            )
        self.clean_tasks()
        self.reset_queues()
        self.add_flood_row([r["F1"] for r in rounds], flood)
        for row_id, variant in variants.items():
            self.add_fair_cost_row(row_id, [r[row_id] for r in rounds], count, len(variant))

    def add_flood_row(self, samples: list[dict], flood: int) -> None:
        """Row F1: owner B's waits over the rounds (p50, p95 of every task), on against off."""

        def percentile(values: list[float], fraction: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

        figures = {}
        for side in ("taskflow", "baseline"):
            waits = [wait for sample in samples for wait in sample[side]["b_waits_s"]]
            figures[side] = {
                "b_wait_p50_s": round(percentile(waits, 0.5), 3),
                "b_wait_p95_s": round(percentile(waits, 0.95), 3),
                "b_wait_max_s": round(max(waits), 3),
                "a_total_median_s": round(median(sample[side]["a_total_s"] for sample in samples), 2),
                "b_waits_s": [sample[side]["b_waits_s"] for sample in samples],
                "a_total_s": [sample[side]["a_total_s"] for sample in samples],
            }
        # Per round: B's longest wait off over on.
        ratios = [
            max(sample["baseline"]["b_waits_s"]) / max(max(sample["taskflow"]["b_waits_s"]), 0.001)
            for sample in samples
        ]
        on, off = figures["taskflow"], figures["baseline"]
        undone = not_done(samples)
        self.results["rows"].append(
            {
                "id": "F1",
                "taskflow": f"fair claim on: owner B's {SMALL_OWNER_TASKS} `demo.noop` (single POSTs) right after "
                f"owner A's bulk of {flood:,} `demo.sleep` of 50 ms, {FAIR_WORKERS} worker processes; "
                "B's wait, created to finished",
                "baseline": "the same with the fair claim off (`TASK_FAIR_CLAIM=false`: first come, first served)",
                "unit": "s",
                "fair_on": on,
                "fair_off": off,
                "ratio_p95": round(off["b_wait_p95_s"] / max(on["b_wait_p95_s"], 0.001), 1),
                "ratio_min": round(min(ratios), 1),
                "ratio_max": round(max(ratios), 1),
                "ratio_meaning": "B's p95 wait, fair off / fair on",
                "target": f"fair on: B's {SMALL_OWNER_TASKS} succeed within {SMALL_OWNER_WITHIN_S:g} s, "
                "and all of A's in the time allowed",
                "met": on["b_wait_max_s"] < SMALL_OWNER_WITHIN_S and not undone,
                "not_done": undone,
            }
        )
        if undone:
            succeeded = [
                f"{SIDE_LABELS[side]}, round {index}: {sample[side]['a_succeeded']:,} of {flood:,}"
                for index, sample in enumerate(samples, start=1)
                for side in ("taskflow", "baseline")
                if not sample[side]["done"]
            ]
            self.results["notes"].append(
                "Row F1: not done within the time allowed (A's time and B's waits still going are lower "
                f"bounds); A's tasks succeeded by then: {'; '.join(succeeded)}."
            )

    def add_fair_cost_row(self, row_id: str, samples: list[dict], count: int, owners: int) -> None:
        """Rows F2: throughput with the fair claim on against off, and CPU per task by part."""
        cpu = {side: [sample[side]["cpu"] for sample in samples] for side in ("taskflow", "baseline")}
        cpu_ms = {
            side: {part: round(median(run[part] for run in runs), 3) for part in runs[0]} for side, runs in cpu.items()
        }
        for side in cpu_ms:
            cpu_ms[side]["total"] = round(sum(cpu_ms[side].values()), 3)
        totals = {side: [sum(run.values()) for run in runs] for side, runs in cpu.items()}
        cpu_ratios = [off / on for on, off in zip(totals["taskflow"], totals["baseline"], strict=True)]
        shared = f", shared by {owners} owners" if owners > 1 else ", one owner"
        undone = not_done(samples)
        if undone:
            self.results["notes"].append(
                f"Row {row_id}: not done within the time allowed (rate and CPU of the tasks that succeeded by "
                f"then): {', '.join(undone)}."
            )
        self.add_row(
            row_id,
            f"fair claim on: end to end, {count:,} `demo.noop` via the bulk API{shared}, until all `succeeded`, "
            f"{FAIR_WORKERS} worker processes",
            "the same with the fair claim off (`TASK_FAIR_CLAIM=false`)",
            "tasks/s",
            [{side: sample[side]["rate"] for side in sample} for sample in samples],
            target=FAIR_COST_TARGET,
            target_text=f"≥ {FAIR_COST_TARGET:g}{X} fair off (costs < 10 %)",
            size=count,
            owners=owners,
            side_labels=SIDE_LABELS,
            cpu_ms_per_task=cpu_ms,
            cpu_samples=cpu,
            taskflow_cpu_ms=cpu_ms["taskflow"]["total"],
            baseline_cpu_ms=cpu_ms["baseline"]["total"],
            # CPU per task, fair off / fair on: ≥ 0.9 when the claim costs under 10 % of the CPU.
            cpu_ratio_median=round(median(cpu_ratios), 3),
            not_done=undone,
        )
        if undone:
            self.results["rows"][-1]["met"] = False

    def row_search(self) -> None:
        """Rows S: a payload and a result containment search on the seeded table against the
        plain first page in the same run (sequential requests on one keep-alive connection:
        the server's time plus a loopback round trip; and CPU per request of the web and the
        database), with the SQL's own time; then what the GIN indexes cost a submission: bulk
        and POST with them and with them dropped, alternating, with CPU per task."""
        from importlib import import_module

        indexes = import_module("apps.tasks.migrations.0009_payload_result_gin").INDEXES
        rows = self.prep["task_rows"]
        log(f"rows S: containment search at {rows:,} tasks; submission with and without the GIN indexes")

        def cpu_by_process() -> dict[int, float]:
            """CPU seconds so far of each gunicorn worker and each database backend of the bench DB."""
            backends = self.db.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            seconds = {}
            for pid in [*self.web.children(), *(row[0] for row in backends)]:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            return seconds

        def cpu_since(before: dict[int, float]) -> float:
            # Per process: a backend that closed in between (CONN_MAX_AGE) must not count negative.
            return sum(now - before.get(pid, 0.0) for pid, now in cpu_by_process().items())

        def timed(paths: list[str]) -> tuple[list[float], float]:
            """Milliseconds of each request, and CPU milliseconds per request.

            One keep-alive connection per batch: gunicorn closes one idle for `keepalive` (5 s),
            and the counts and EXPLAINs between batches can take longer on a loaded machine."""
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            cpu, times = cpu_by_process(), []
            try:
                for path in paths:
                    started = time.perf_counter()
                    status, body = self.http("GET", path, key=self.prep["staff_key"], conn=conn)
                    times.append((time.perf_counter() - started) * 1000)
                    if status != 200:
                        raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
            finally:
                conn.close()
            return times, cpu_since(cpu) * 1000 / len(paths)

        def explained(column: str, template: dict) -> tuple[float, set[str]]:
            """The page query's execution time (EXPLAIN ANALYZE, ms) and the indexes its plan reads."""
            plan = "\n".join(
                line
                for (line,) in self.db.execute(
                    f"EXPLAIN ANALYZE SELECT id FROM tasks_task WHERE {column} @> %s::jsonb "
                    "ORDER BY created_at DESC, id DESC LIMIT 21",
                    [json.dumps(template)],
                )
            )
            return float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1)), set(re.findall(r" on (\w+)", plan))

        searches = {
            "payload": ("payload_contains", [{"customer": c} for c in range(97, 5001, 247)]),
            "result": ("result_contains", [{"items": n} for n in range(11, 501, 25)]),
        }
        for name, (parameter, templates) in searches.items():
            column = name
            matches = [
                self.db.execute(f"SELECT count(*) FROM tasks_task WHERE {column} @> %s::jsonb", [json.dumps(t)])
                .fetchone()[0]
                for t in templates
            ]  # fmt: skip
            paths = {
                "search": [f"/api/tasks/?{parameter}={quote(json.dumps(t))}" for t in templates],
                "list": ["/api/tasks/"] * len(templates),
            }
            times = {"search": [], "list": []}
            cpu = {"search": [], "list": []}
            timed(paths["search"][:3] + paths["list"][:3])  # warm-up
            for index in range(max(self.profile.rounds, 2)):
                for side in ("search", "list") if index % 2 == 0 else ("list", "search"):
                    side_times, side_cpu = timed(paths[side])
                    times[side] += side_times
                    cpu[side].append(side_cpu)
            sql = [explained(column, t) for t in templates]
            values = sorted(times["search"])
            self.results["rows"].append(
                {
                    "id": f"S ({name})",
                    "taskflow": f"`GET /api/tasks/?{parameter}=…` as staff, {rows:,} tasks, "
                    f"{len(templates)} keys matching {min(matches):,}-{max(matches):,} tasks each",
                    "baseline": "`GET /api/tasks/` as staff, first page, same run",
                    "unit": "ms",
                    "median": round(median(values), 1),
                    "p95": round(values[min(len(values) - 1, round(0.95 * (len(values) - 1)))], 1),
                    "list_median": round(median(times["list"]), 1),
                    "cpu_ms_per_request": round(median(cpu["search"]), 2),
                    "list_cpu_ms_per_request": round(median(cpu["list"]), 2),
                    "sql_ms_median": round(median(ms for ms, _ in sql), 2),
                    "indexes_read": sorted(set().union(*(names for _, names in sql))),
                    "samples": [round(v, 2) for v in times["search"]],
                    "list_samples": [round(v, 2) for v in times["list"]],
                    "matches": matches,
                    "target": 50,
                    "met": median(values) < 50,
                }
            )
            log(
                f"  search {name}: median {median(values):.1f} ms (plain list {median(times['list']):.1f} ms), "
                f"SQL {median(ms for ms, _ in sql):.2f} ms via {sorted(set().union(*(n for _, n in sql)))}"
            )

        def set_indexes(present: bool) -> None:
            for index, definition in indexes.items():
                if present:
                    self.db.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} {definition}")
                else:
                    self.db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
            self.vacuum()

        count = self.profile.bulk_tasks
        connections = self.profile.wrk_connections[0]

        def measure(present: bool) -> dict:
            set_indexes(present)
            self.clean_tasks()
            self.reset_queues()
            cpu, started = cpu_by_process(), time.perf_counter()
            self.submit_bulk(count)
            bulk = {"rate": round(count / (time.perf_counter() - started), 1)}
            bulk["cpu_ms_per_task"] = round(cpu_since(cpu) * 1000 / count, 3)
            self.clean_tasks()
            self.reset_queues()
            cpu = cpu_by_process()
            post = self.wrk(method="POST", path="/api/tasks/", authorization=f"Api-Key {self.prep['client_key']}",
                            connections=connections, web=self.web, body=NOOP_TASK)  # fmt: skip
            post["cpu_ms_per_task"] = round(cpu_since(cpu) * 1000 / max(post["requests"], 1), 3)
            return {"bulk": bulk, "post": post}

        samples = []
        try:
            measure(True)  # warm-up
            for index in range(self.profile.rounds):
                self.check_time("rows S")
                order = [("taskflow", True), ("baseline", False)]
                if index % 2:
                    order.reverse()
                samples.append({side: measure(present) for side, present in order})
                log(
                    f"  submit round {index + 1}/{self.profile.rounds}: "
                    + ", ".join(
                        f"{side} bulk {s['bulk']['rate']} post {s['post']['rate']}" for side, s in samples[-1].items()
                    )
                )
        finally:
            set_indexes(True)
            self.clean_tasks()
            self.reset_queues()
        for kind, label in (
            ("bulk", f"bulk submission, {count:,} tasks"),
            ("post", f"`POST /api/tasks/`, {connections} conn."),
        ):
            cpu = {side: [s[side][kind]["cpu_ms_per_task"] for s in samples] for side in ("taskflow", "baseline")}
            self.add_row(
                f"S ({kind}, index cost)",
                f"{label}, with the payload/result GIN indexes",
                "the same with the two indexes dropped",
                "tasks/s",
                [{side: s[side][kind]["rate"] for side in s} for s in samples],
                target=0.9,
                cpu_ms_per_task_with=cpu["taskflow"],
                cpu_ms_per_task_without=cpu["baseline"],
                cpu_ratio_median=round(median(b / t for t, b in zip(cpu["taskflow"], cpu["baseline"], strict=True)), 3),
            )
            self.results["notes"].append(
                f"Row S ({kind}, index cost): web and database CPU per task {median(cpu['taskflow']):.3f} ms with "
                f"the GIN indexes, {median(cpu['baseline']):.3f} ms without (medians over the rounds)."
            )

    def memory(self) -> None:
        web = {pid: peak_rss_mb(pid) for pid in self.web.children()}
        tf_children = {pid: peak_rss_mb(pid) for pid in self.tf_worker.children()}
        bare_children = {pid: peak_rss_mb(pid) for pid in self.bare_worker.children()}

        def peak(values: dict) -> float | None:
            found = [v for v in values.values() if v is not None]
            return max(found) if found else None

        self.results["rows"].append(
            {
                "id": "7",
                "taskflow": "peak RSS (VmHWM) after the runs",
                "unit": "MB",
                "gunicorn_worker_mb": peak(web),
                "celery_pool_child_mb": peak(tf_children),
                "bare_celery_pool_child_mb": peak(bare_children),
                "gunicorn_workers": len(web),
                "target": 150,
                "met": all(v is not None and v < 150 for v in (peak(web), peak(tf_children))),
            }
        )

    # --- results ---

    def add_row(self, row_id, taskflow, baseline, unit, samples, *, target, lower_is_better=False, **extra) -> None:
        """A pair row: per-round ratios (TaskFlow's advantage, >1 is better for TaskFlow
        on time rows), their median and spread."""
        tf_values = [sample["taskflow"] for sample in samples]
        base_values = [sample["baseline"] for sample in samples]
        ratios = [base / tf if lower_is_better else tf / base for tf, base in zip(tf_values, base_values, strict=True)]
        row = {
            "id": row_id,
            "taskflow": taskflow,
            "baseline": baseline,
            "unit": unit,
            "taskflow_median": round(median(tf_values), 2),
            "baseline_median": round(median(base_values), 2),
            "taskflow_samples": tf_values,
            "baseline_samples": base_values,
            "ratio_median": round(median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "ratio_samples": [round(r, 3) for r in ratios],
            "ratio_meaning": "baseline time / TaskFlow time (speed-up)" if lower_is_better else "TaskFlow / baseline",
            "target": target,
            "met": median(ratios) >= target,
        }
        latency = extra.pop("latency", None)
        latency_target = extra.pop("latency_target", None)
        row.update(extra)
        if latency is not None and "cpu_ms" in latency[0]["taskflow"]:
            # CPU per request of each side's gunicorn workers: TaskFlow's must stay under the
            # target whatever the ratio says (the machine's load moves req/s, much less CPU).
            for side in ("taskflow", "baseline"):
                values = [s[side]["cpu_ms"] for s in latency]
                row[f"cpu_ms_{side}_median"] = round(median(values), 2)
                row[f"cpu_ms_{side}_min"] = round(min(values), 2)
                row[f"cpu_ms_{side}_max"] = round(max(values), 2)
                row[f"cpu_ms_{side}_samples"] = values
            row["cpu_ms_target"] = CPU_MS_TARGET
            row["met"] = row["met"] and row["cpu_ms_taskflow_median"] <= CPU_MS_TARGET
        if latency is not None:
            tf_p99 = [s["taskflow"]["latency_ms"]["p99"] for s in latency]
            base_p99 = [s["baseline"]["latency_ms"]["p99"] for s in latency]
            p99_ratios = [t / b for t, b in zip(tf_p99, base_p99, strict=True)]
            row["p99_ms_taskflow_median"] = round(median(tf_p99), 1)
            row["p99_ms_baseline_median"] = round(median(base_p99), 1)
            row["p99_ratio_median"] = round(median(p99_ratios), 2)
            row["p99_ratio_max"] = round(max(p99_ratios), 2)
            row["latency_samples"] = [
                {side: s[side]["latency_ms"] for side in ("taskflow", "baseline")} for s in latency
            ]
            if latency_target:
                row["p99_target"] = latency_target
                row["met"] = row["met"] and median(p99_ratios) <= latency_target
        self.results["rows"].append(row)

    def fractions(self) -> None:
        limits = self.results["limits"]
        rows = {row["id"]: row for row in self.results["rows"]}
        out = {}
        e2e = rows.get("1", {}).get("taskflow_median")
        bulk = rows.get("2", {}).get("taskflow_median")
        post = max((row["taskflow_median"] for key, row in rows.items() if key.startswith("3")), default=None)
        lpush, rpop, pg = (limits.get(k) for k in ("redis_lpush_per_s", "redis_rpop_per_s", "pg_insert_update_per_s"))
        if e2e and pg:
            out["end_to_end_vs_pg_insert_update"] = round(e2e / pg, 3)
        if e2e and lpush and rpop:
            out["end_to_end_vs_redis_lpush_rpop"] = round(e2e / min(lpush, rpop), 4)
        if bulk and lpush:
            out["bulk_submission_vs_redis_lpush"] = round(bulk / lpush, 4)
        if bulk and pg:
            out["bulk_submission_vs_pg_insert_update"] = round(bulk / pg, 3)
        if post and pg:
            out["post_vs_pg_insert_update"] = round(post / pg, 3)
        limits["fractions"] = out

    def run(self) -> dict:
        started = time.monotonic()
        self.reference_ms = reference_loop_ms()
        wanted = set(self.args.only or ["1", "2", "3", "4", "5", "6", "7", "S", "F", "limits"])
        try:
            self.ensure_database()
            self.prepare()
            self.reset_queues()
            self.clean_tasks()
            if "limits" in wanted:
                self.measure_limits()
            self.start_web()
            if "2" in wanted:
                self.row_bulk()
            if "3" in wanted:
                self.row_post()
            # Rows 2 and 3 wrote and deleted tens of thousands of the newest tasks: the list
            # and admin rows would wade through their dead index entries until autovacuum
            # came by. Measure the steady state.
            self.vacuum()
            if "S" in wanted:
                self.row_search()
            if "4" in wanted:
                self.row_list()
            if wanted & {"5", "6"}:
                self.row_admin()
            if "1" in wanted or "7" in wanted:
                self.start_workers()
            if "1" in wanted:
                self.row_end_to_end()
            if "7" in wanted:
                self.memory()
            if "1" in wanted:
                self.stop_workers()
                self.start_workers(prefetch=1)
                self.row_end_to_end(prefetch=1)
            if "F" in wanted:
                if getattr(self, "tf_worker", None) in self.services:
                    self.stop_workers()  # rows F start their own, and only theirs may consume
                self.rows_fair()
        finally:
            self.stop_all()
            try:
                self.clean_tasks()
                self.reset_queues()
            except Exception as exc:  # the database may be what failed
                log(f"clean-up failed: {exc}")
            if not self.args.keep_logs:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            else:
                log(f"logs kept in {self.work_dir}")
        self.fractions()
        self.results["meta"] = self.meta(time.monotonic() - started)
        return self.results

    def meta(self, elapsed: float) -> dict:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=BASE_DIR, capture_output=True, text=True).stdout
        )
        return {
            "profile": self.profile_name,
            "rounds": self.profile.rounds,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit + ("+changes" if dirty else ""),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}",
            "elapsed_s": round(elapsed, 1),
            # at the start and at the end: this shared machine's speed moves within a run
            "reference_loop_ms": [self.reference_ms, reference_loop_ms()],
            "task_rows": self.prep.get("task_rows") if hasattr(self, "prep") else None,
            "baseline_rows": self.prep.get("baseline_rows") if hasattr(self, "prep") else None,
            "seeded_with": self.prep.get("seeded_with") if hasattr(self, "prep") else None,
            "worker_flags": " ".join(WORKER_FLAGS[1:]),
            "gunicorn": "deploy/gunicorn.conf.py (gthread; WEB_CONCURRENCY and GUNICORN_THREADS at their defaults)",
        }


# --- Markdown ------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.1f} ms"
    return f"{value:,.0f} {unit}"


X = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"


def cpu_text(value) -> str:
    """The Django process's CPU per request (admin rows), when measured."""
    return f" (CPU {value:,.1f} ms)" if value else ""


def not_done(samples: list[dict]) -> list[str]:
    """The sides of rows F that did not finish in time, as 'fair on, round 2'."""
    return [
        f"{SIDE_LABELS[side]}, round {index}"
        for index, sample in enumerate(samples, start=1)
        for side in ("taskflow", "baseline")
        if not sample[side]["done"]
    ]


def flood_line(row: dict) -> str:
    """Row F1's line: owner B's waits and owner A's time, fair claim on and off."""

    def side(figures: dict) -> str:
        return (
            f"B waits p50 {figures['b_wait_p50_s']:,.2f} s, p95 {figures['b_wait_p95_s']:,.2f} s; "
            f"A all done in {figures['a_total_median_s']:,.1f} s"
        )

    ratio = f"{row['ratio_p95']:,.1f}{X} ({row['ratio_min']:,.1f}{DASH}{row['ratio_max']:,.1f})"
    return (
        f"| F1 | {row['taskflow']} | {row['baseline']} | {side(row['fair_on'])} | {side(row['fair_off'])} "
        f"| {ratio} | {row['target']} | {'yes' if row['met'] else '**no**'} |"
    )


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"Measured {meta['date']} at {meta['commit']} on {meta['machine']}; profile `{meta['profile']}`, "
        f"{meta['rounds']} alternating rounds per pair, {meta['elapsed_s']:.0f} s in all"
        + (
            "; this machine's reference loop {:,.0f} ms of CPU at the start, {:,.0f} ms at the end".format(
                *meta["reference_loop_ms"]
            )
            if "reference_loop_ms" in meta
            else ""
        )
        + f". Ratio: median of the per-round ratios (min{DASH}max across rounds).",
        "",
        "| # | TaskFlow | baseline (same run) | TaskFlow median | baseline median "
        f"| ratio (min{DASH}max) | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if row.get("skipped"):
            lines.append(f"| {row['id']} | skipped: {row['skipped']} | | | | | | |")
            continue
        if row["id"].startswith("6"):
            lines.append(
                f"| {row['id']} | {row['taskflow']} | — | median {fmt(row['median'], 'ms')}, "
                f"p95 {fmt(row['p95'], 'ms')}{cpu_text(row.get('cpu_ms'))} | — | — | {row.get('target', 'report')} "
                f"| {'—' if row.get('met') is None else ('yes' if row['met'] else '**no**')} |"
            )
            continue
        if row["id"] in ("S (payload)", "S (result)"):
            lines.append(
                f"| {row['id']} | {row['taskflow']} | {row['baseline']} | median {fmt(row['median'], 'ms')}, "
                f"p95 {fmt(row['p95'], 'ms')}; CPU {row['cpu_ms_per_request']:.1f} ms/request; "
                f"SQL {row['sql_ms_median']:.2f} ms ({', '.join(row['indexes_read'])}) "
                f"| median {fmt(row['list_median'], 'ms')}; CPU {row['list_cpu_ms_per_request']:.1f} ms/request "
                f"| — | median < {row['target']} ms | {'yes' if row['met'] else '**no**'} |"
            )
            continue
        if row["id"] == "F1":
            lines.append(flood_line(row))
            continue
        if row["id"] == "7":
            lines.append(
                f"| 7 | {row['taskflow']}: gunicorn worker / Celery pool child | bare Celery pool child "
                f"| {row['gunicorn_worker_mb']} MB / {row['celery_pool_child_mb']} MB "
                f"| {row['bare_celery_pool_child_mb']} MB | — | < 150 MB each | {'yes' if row['met'] else 'no'} |"
            )
            continue
        speedup = row["unit"] == "ms"
        ratio = f"{row['ratio_median']:.2f}{X} ({row['ratio_min']:.2f}{DASH}{row['ratio_max']:.2f})"
        target = row.get("target_text") or f"≥ {row['target']:g}{X} {'faster' if speedup else 'baseline'}"
        tf, base = fmt(row["taskflow_median"], row["unit"]), fmt(row["baseline_median"], row["unit"])
        tf, base = tf + cpu_text(row.get("taskflow_cpu_ms")), base + cpu_text(row.get("baseline_cpu_ms"))
        if "p99_ms_taskflow_median" in row:
            tf += f", p99 {row['p99_ms_taskflow_median']:,.0f} ms"
            base += f", p99 {row['p99_ms_baseline_median']:,.0f} ms"
        if "cpu_ms_taskflow_median" in row:
            for side in ("taskflow", "baseline"):
                cpu = (
                    f", CPU {row[f'cpu_ms_{side}_median']:.2f} ms/req "
                    f"({row[f'cpu_ms_{side}_min']:.2f}{DASH}{row[f'cpu_ms_{side}_max']:.2f})"
                )
                if side == "taskflow":
                    tf += cpu
                else:
                    base += cpu
            target += f", CPU ≤ {row['cpu_ms_target']:g} ms/req"
        if "p99_ms_taskflow_median" in row:
            ratio += f"; p99 {row['p99_ratio_median']:.2f}{X}"
            if row.get("p99_target"):
                target += f", p99 ≤ {row['p99_target']:g}{X}"
        lines.append(
            f"| {row['id']} | {row['taskflow']} | {row['baseline']} | {tf} | {base} | {ratio} | {target} "
            f"| {'yes' if row['met'] else '**no**'} |"
        )
    limits = results["limits"]
    if limits.get("pg_insert_update_per_s"):
        fractions = limits.get("fractions", {})
        lines += [
            "",
            "Physical limits in the same run: Redis "
            f"{limits.get('redis_lpush_per_s', 0):,.0f} LPUSH/s and {limits.get('redis_rpop_per_s', 0):,.0f} RPOP/s "
            "(`redis-benchmark`, 16 clients); PostgreSQL "
            f"{limits['pg_insert_update_per_s']:,.0f} single-row INSERT+UPDATE transactions/s (`pgbench`, 4 clients).",
        ]
        described = {
            "end_to_end_vs_pg_insert_update": "end-to-end tasks/s vs PostgreSQL INSERT+UPDATE/s",
            "end_to_end_vs_redis_lpush_rpop": "end-to-end tasks/s vs Redis LPUSH/RPOP/s",
            "bulk_submission_vs_pg_insert_update": "bulk submissions/s vs PostgreSQL INSERT+UPDATE/s",
            "bulk_submission_vs_redis_lpush": "bulk submissions/s vs Redis LPUSH/s",
            "post_vs_pg_insert_update": "`POST /api/tasks/` req/s vs PostgreSQL INSERT+UPDATE/s",
        }
        parts = [f"{text} {fractions[key]:.1%}" for key, text in described.items() if key in fractions]
        if parts:
            lines.append("TaskFlow reaches: " + "; ".join(parts) + ".")
    for row in results["rows"]:
        if "cpu_ms_per_task" in row:
            labels = row.get("side_labels", {"taskflow": "TaskFlow", "baseline": "bare Celery"})
            parts = "; ".join(
                f"{labels[side]}: " + ", ".join(f"{part} {value:.2f}" for part, value in cpu.items())
                for side, cpu in row["cpu_ms_per_task"].items()
            )
            lines += ["", f"Row {row['id']}, CPU ms per task (median of the rounds, from /proc): {parts}."]
            if "cpu_ratio_median" in row:
                lines[-1] += f" CPU per task, fair off / fair on: {row['cpu_ratio_median']:.2f}{X}."
    for note in results.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick", help="fewer, shorter rounds")
    size.add_argument("--full", action="store_const", dest="profile", const="full", help="more, longer rounds")
    size.add_argument(
        "--smoke", action="store_const", dest="profile", const="smoke", help="tiny sizes, for CI (no timing value)"
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", 8791)))
    parser.add_argument("--stock-port", type=int, help="the stock baseline's gunicorn (default: --port + 1)")
    parser.add_argument("--rows", type=int, help="rows in the task and baseline tables (default by profile)")
    parser.add_argument("--rounds", type=int, help="rounds per pair (default by profile)")
    parser.add_argument("--only", nargs="+", help="rows to run: 1 2 3 4 5 6 7 S F limits")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--time-limit", type=float, default=1800, help="give up after this many seconds")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs (path printed)")
    args = parser.parse_args(argv)
    # This process publishes the bare Celery tasks: it must not load Django through Celery's
    # Django fixup (the services it starts get their own environment, see Bench.env).
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)

    # Stopped from outside (SIGTERM, or SIGINT in a background job): still stop the services
    # and clean up, through run()'s `finally`.
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for url in (args.database_url, args.redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error(f"the bench only runs against this machine (127.0.0.1): {url}")
    missing = [tool for tool in ("wrk", "redis-benchmark", "pgbench") if shutil.which(tool) is None]
    if missing:
        parser.error(f"missing {', '.join(missing)}: apt-get install -y wrk redis-tools postgresql-client")
    name = args.profile or "standard"
    profile = PROFILES[name]
    if args.rounds:
        profile = Profile(**{**profile.__dict__, "rounds": args.rounds})
    results = Bench(args, profile, name).run()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.output_dir / "latest.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
