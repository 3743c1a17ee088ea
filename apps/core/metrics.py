"""Prometheus exposition: what one process serves, summed over its service's processes, plus system gauges.

Metrics are defined by the apps that record them (apps/tasks/metrics.py for tasks; the
request metric below, recorded by apps.core.middleware.RequestMetricsMiddleware). With several processes per
service prometheus_client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR set): each
process writes its values to its own files in that directory, and a scrape of any one
process sums them all. deploy/gunicorn.conf.py and apps/core/celery_hooks.py prepare the
directory (one per service, emptied at start) and mark exited processes dead.

System gauges describe the whole system, not a process (queue depths, tasks by status):
apps register their collectors here at start-up (AppConfig.ready()), and the web's /metrics
computes them per scrape.
"""

import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

# auto_describe off: registering a collector must not run its queries at start-up.
_system_gauges = CollectorRegistry(auto_describe=False)


def register_system_gauges(collector) -> None:
    """Add a collector computed per scrape of the web's /metrics (registering one twice adds it once)."""
    _system_gauges.register(collector)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_registry():
    """What this process exposes: every process's values in multiprocess mode, else its own."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition(*, with_system_gauges: bool) -> bytes:
    """The metrics page in the Prometheus text format."""
    page = generate_latest(process_registry())
    if with_system_gauges:
        page += generate_latest(_system_gauges)
    return page


# --- Requests -----------------------------------------------------------------------------

# The one request metric (apps.core.middleware.RequestMetricsMiddleware): its _count gives the
# request rate by view, method and status, its buckets the latency. django-prometheus' two
# middlewares made about ten labelled updates per request (a file write each in multiprocess
# mode); this is one observation.
HTTP_REQUEST_SECONDS = Histogram(
    "taskflow_http_request_seconds",
    "Web requests by view, method and status, with their latency (seconds).",
    ["view", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


# --- The database, per scrape -------------------------------------------------------------------


class DatabaseCollector:
    """The database as the web's /metrics sees it at each scrape: reachable or not, one round
    trip's latency, and (PostgreSQL) its connections by state. Read per scrape, never per
    statement: the hot path records nothing about its queries."""

    def collect(self):
        import time

        from django.db import connection

        up = GaugeMetricFamily("taskflow_database_up", "1 when the database answered this scrape.")
        ping = GaugeMetricFamily("taskflow_database_ping_seconds", "One round trip to the database (seconds).")
        connections = GaugeMetricFamily(
            "taskflow_database_connections", "Connections to this database by state (PostgreSQL).", labels=["state"]
        )
        try:
            with connection.cursor() as cursor:
                started = time.perf_counter()
                cursor.execute("SELECT 1")
                cursor.fetchone()
                ping.add_metric([], time.perf_counter() - started)
                if connection.vendor == "postgresql":
                    cursor.execute(
                        "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() GROUP BY 1 ORDER BY 1"
                    )
                    for state, count in cursor.fetchall():
                        connections.add_metric([state], count)
            up.add_metric([], 1)
        except Exception as exc:  # the database is down: say so, and serve every other metric
            logger.warning("database metrics not collected: %s", exc)
            up.add_metric([], 0)
        yield up
        yield ping
        yield connections


DATABASE = DatabaseCollector()
