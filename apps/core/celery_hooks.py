"""Celery process hooks: Django's logging stays in charge, and worker metrics add up across children.

Connected by taskflow_site/celery.py. Nothing here may import prometheus_client at module
level: it picks single- or multiprocess mode when first imported, and the worker's main
process must set PROMETHEUS_MULTIPROC_DIR before that happens (prepare_worker_metrics, called
by taskflow_site.celery before the worker loads Django).
"""

import logging
import logging.config
import os
import shutil
import sys
from pathlib import Path

from celery import signals

logger = logging.getLogger(__name__)

_state: dict = {}


def reset_multiprocess_dir(path: str) -> None:
    """Create the metrics directory, or empty it: files of an earlier run would be summed too."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink()


def keep_django_logging(**kwargs) -> None:
    """Celery would replace the root handlers with its own format: keep LOGGING (structlog) instead.

    A receiver of `setup_logging` tells Celery that logging is taken care of; `--loglevel`
    is then ignored in favour of LOG_LEVEL.
    """
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def prepare_worker_metrics() -> None:
    """In the worker's main process, before it loads Django: one metrics directory for this worker."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        # Prefork children count in their own memory, invisible to the main process that
        # serves the metrics: multiprocess mode is needed whatever the environment says. A
        # directory per worker process, so that several workers on one machine stay apart.
        from django.conf import settings

        if "prometheus_client" in sys.modules:
            logger.error("prometheus_client was imported before the worker set up its metrics: child metrics are lost")
        path = str(Path(settings.VAR_DIR) / "metrics" / f"worker-{os.getpid()}")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _state["own_dir"] = path
    reset_multiprocess_dir(path)


def serve_worker_metrics(**kwargs) -> None:
    """In the worker's main process once it is ready: /metrics on WORKER_METRICS_PORT (0: off)."""
    from django.conf import settings
    from prometheus_client import start_http_server

    from .metrics import process_registry

    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    try:
        server, _thread = start_http_server(port, registry=process_registry())
    except OSError as exc:
        # Metrics are not worth refusing work for; the scrape target shows as down.
        logger.error("worker metrics: cannot listen on port %s: %s", port, exc)
        return
    _state["server"] = server
    logger.info("worker metrics on port %s", port)


def mark_child_dead(pid=None, **kwargs) -> None:
    """A pool child exits: its live gauges no longer count (counters and histograms stay summed)."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid or os.getpid())


def stop_worker_metrics(**kwargs) -> None:
    server = _state.pop("server", None)
    if server is not None:
        server.shutdown()
        server.server_close()
    own_dir = _state.pop("own_dir", None)
    if own_dir:
        shutil.rmtree(own_dir, ignore_errors=True)


def connect() -> None:
    signals.setup_logging.connect(keep_django_logging, weak=False)
    signals.worker_ready.connect(serve_worker_metrics, weak=False)
    signals.worker_process_shutdown.connect(mark_child_dead, weak=False)
    signals.worker_shutdown.connect(stop_worker_metrics, weak=False)
