"""CPU per API request in process, with production settings, and where it goes.

    DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=... REDIS_URL=... DEBUG=false \\
        python -m bench.profile_api post --requests 500 [--profile cprofile|pyinstrument]

Runs TaskFlow's WSGI application (every middleware, authentication, the rate limiter, metrics
and logs, as gunicorn would) in this one process, without a server or a client in the way:
each request is a WSGI environ handed to the handler and its body read to the end. The figure
is `time.process_time()` over `--requests` requests after a warm-up, in batches: the median
of the batches' CPU per request and their spread. PostgreSQL's and Redis' own CPU is not in
it (they are other processes); the client's work here is a few microseconds per request.

`--profile cprofile` prints the functions by cumulative time (and writes a .pstats file for
snakeviz or pstats); `--profile pyinstrument` prints pyinstrument's tree when it is
installed. Used to find where the time of `POST /api/tasks/` and `GET /api/tasks/` goes
(docs/performance.md). Log lines go to stderr as in production: redirect it (2>/dev/null).
"""

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time

import django

ENDPOINTS = {
    "post": ("POST", "/api/tasks/", {"kind": "demo.noop", "payload": {"echo": 1}}),
    "list": ("GET", "/api/tasks/", None),
    "detail": ("GET", None, None),
}
PROFILE_EMAIL = "bench-profile@bench.taskflow.local"


def environ_for(method: str, path: str, body: bytes | None, authorization: str) -> dict:
    """What gunicorn hands a WSGI application for one request on a keep-alive connection."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench-profile",
        "HTTP_ACCEPT": "*/*",
        "HTTP_AUTHORIZATION": authorization,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body or b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body is not None:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def credentials(*, staff: bool, auth: str) -> tuple[int, str]:
    """(user id, Authorization header) of the profile's own user, with a fresh key or token."""
    from apps.accounts.models import ApiKey, User, generate_api_key, hash_api_key

    email = PROFILE_EMAIL.replace("@", "-staff@") if staff else PROFILE_EMAIL
    user = User.objects.filter(email=email).first()
    if user is None:
        maker = User.objects.create_superuser if staff else User.objects.create_user
        user = maker(email=email, password=None, full_name="Bench Profile")
    if auth == "jwt":
        from rest_framework_simplejwt.tokens import AccessToken

        return user.pk, f"Bearer {AccessToken.for_user(user)}"
    user.api_keys.all().delete()
    prefix, raw = generate_api_key()
    ApiKey.objects.create(user=user, name="bench-profile", prefix=prefix, key_hash=hash_api_key(raw))
    return user.pk, f"Api-Key {raw}"


def add_cprofile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", default="cumulative", help="cProfile's sort order")
    parser.add_argument("--limit", type=int, default=60, help="cProfile: lines printed")
    parser.add_argument("--output", help="cProfile: write the .pstats file here")


_kept: list = []  # what must live as long as the process


def setup_production_django(parser: argparse.ArgumentParser) -> None:
    """Django as in a production process: the bench's settings (DEBUG must be off), and
    prometheus_client in multiprocess mode, as under gunicorn (deploy/gunicorn.conf.py) and
    in a worker's pool, its directory removed when the process ends."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    metrics_dir = tempfile.TemporaryDirectory(prefix="taskflow-profile-metrics-")
    _kept.append(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name
    django.setup()
    from django.conf import settings

    if settings.DEBUG:
        parser.error("run with DEBUG=false: the figure is for production settings")


def delete_tasks(owner_id: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM tasks_taskevent WHERE task_id IN (SELECT id FROM tasks_task WHERE owner_id = %s)", [owner_id]
        )
        cursor.execute("DELETE FROM tasks_task WHERE owner_id = %s", [owner_id])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint", choices=sorted(ENDPOINTS))
    parser.add_argument("--requests", type=int, default=500, help="measured requests (after the warm-up)")
    parser.add_argument("--batches", type=int, default=5, help="the requests are measured in this many batches")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--auth", choices=["api-key", "jwt"], default="api-key")
    parser.add_argument("--staff", action="store_true", help="as a superuser (the list then shows every task)")
    parser.add_argument("--profile", choices=["cprofile", "pyinstrument"], help="profile the measured requests")
    add_cprofile_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)

    setup_production_django(parser)
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    user_id, authorization = credentials(staff=args.staff, auth=args.auth)
    method, path, body = ENDPOINTS[args.endpoint]
    if args.endpoint == "detail":
        from apps.tasks.models import Task

        task = Task.objects.filter(owner_id=user_id).first()
        if task is None:
            parser.error("detail: submit a task first (run `post` with --keep)")
        path = f"/api/tasks/{task.pk}/"
    raw_body = json.dumps(body).encode() if body is not None else None
    expected = 201 if method == "POST" else 200

    def one() -> None:
        status = []
        chunks = application(
            environ_for(method, path, raw_body, authorization), lambda s, headers, exc_info=None: status.append(s)
        )
        for _chunk in chunks:
            pass
        if hasattr(chunks, "close"):
            chunks.close()
        if not status[0].startswith(str(expected)):
            raise SystemExit(f"{method} {path} answered {status[0]}")

    try:
        for _ in range(args.warmup):
            one()
        profiler = None
        if args.profile == "cprofile":
            import cProfile

            profiler = cProfile.Profile(time.process_time)  # CPU, not waits on the database
        elif args.profile == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
        per_batch = max(args.requests // args.batches, 1)
        batches = []
        if profiler:
            profiler.enable() if args.profile == "cprofile" else profiler.start()
        for _ in range(args.batches):
            started = time.process_time()
            for _ in range(per_batch):
                one()
            batches.append((time.process_time() - started) / per_batch * 1000)
        if profiler:
            profiler.disable() if args.profile == "cprofile" else profiler.stop()
    finally:
        if method == "POST":
            delete_tasks(user_id)
    result = {
        "endpoint": f"{method} {args.endpoint}",
        "auth": args.auth,
        "requests": per_batch * args.batches,
        "cpu_ms_median": round(statistics.median(batches), 3),
        "cpu_ms_min": round(min(batches), 3),
        "cpu_ms_max": round(max(batches), 3),
        "profiled": bool(profiler),
    }
    if args.profile == "cprofile":
        import pstats

        if args.output:
            profiler.dump_stats(args.output)
        if not args.json:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats(args.sort).print_stats(args.limit)
    elif args.profile == "pyinstrument" and not args.json:
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(main())
