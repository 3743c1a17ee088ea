"""gunicorn settings, all overridable from the environment.

Threads (gthread) rather than more processes: TaskFlow's requests spend most of their time
waiting on PostgreSQL and Redis, so threads give the concurrency at a fraction of the memory.
"""

import multiprocessing
import os
import pathlib
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", min(multiprocessing.cpu_count() * 2 + 1, 4)))
threads = int(os.environ.get("GUNICORN_THREADS", 4))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 10000))
max_requests_jitter = 500
# No access log by default: TaskFlow writes one JSON line per request itself (django-structlog's
# request_finished: method and path, status, duration, client IP, user, user agent, request
# id). GUNICORN_ACCESS_LOG=- writes gunicorn's own lines to stdout as well.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus multiprocess mode: every gunicorn worker writes its metrics to files in one
# directory and /metrics, whichever worker serves it, sums them. One directory per gunicorn
# master, emptied at start; without PROMETHEUS_MULTIPROC_DIR a temporary one is made here,
# before any worker imports prometheus_client (it picks its mode when first imported).
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="taskflow-web-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def on_starting(server):
    """In the master, before any worker starts: files of an earlier run would be summed too."""
    directory = pathlib.Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
