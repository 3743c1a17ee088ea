"""The operators' dashboard: task counts, throughput and failures as server-rendered SVG,
queue depths, live workers and the slowest and most failing kinds.

Figures about finished tasks (finished per state, the charts, the kinds' run times) are read
from the rollups that beat keeps every TASK_ROLLUP_INTERVAL seconds (rollups.py), never from
the task table; the live states are counted from their own small index ranges. Aggregates
are also cached in two parts and the page says how old each is: the last hour and the live
counts for CACHE_SECONDS (10 s), the day/week figures and the per-kind run
times for HISTORY_SECONDS (5 min); "Recompute now" refreshes the rollups first.
Workers are inspected in a separate request (the page loads it) because a remote-control
broadcast waits up to INSPECT_TIMEOUT for replies.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

# taskflow_site's app, made current at start: apps do not import the project (pyproject's import contracts).
from celery import current_app as celery_app
from django.conf import settings
from django.core.cache import cache
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from . import rollups, selectors
from .dispatch import RUN_TASK
from .models import FINAL_STATUSES, TaskStatus

logger = logging.getLogger(__name__)

RECENT_KEY = "tasks:dashboard:recent:v2"
LIMITS_KEY = "tasks:dashboard:limits:v1"
COUNTS_KEY = "tasks:dashboard:counts:v1"
HISTORY_KEY = "tasks:dashboard:history:v2"
WORKERS_KEY = "tasks:dashboard:workers:v1"
TOP_KINDS = 8
# Owners at their concurrency limit listed at most (the most waiting first).
OWNERS_AT_LIMIT_SHOWN = 20
# The aggregates are cached this long (seconds): the last hour and the live counts for CACHE,
# the day's and week's for HISTORY; the workers panel for WORKERS_CACHE.
CACHE_SECONDS = 10
HISTORY_SECONDS = 300
WORKERS_CACHE_SECONDS = 5
# The status table as the staff's live counts stream sends it is read at most this often
# (seconds), once for every open dashboard in every process (the cache is shared).
COUNTS_SECONDS = 1
# Seconds the workers panel waits for workers to answer a remote-control inspection.
INSPECT_TIMEOUT = 1.0


def _cached(key: str, seconds: int, compute, *, refresh: bool) -> dict:
    data = None if refresh else cache.get(key)
    if data is None:
        now = timezone.now()
        data = {"computed_at": now, **compute(now)}
        cache.set(key, data, seconds)
    return data


def dashboard_recent(*, refresh: bool = False) -> dict:
    """The last hour and what is live now: cheap, kept CACHE_SECONDS."""
    return _cached(
        RECENT_KEY,
        CACHE_SECONDS,
        lambda now: {
            "created": selectors.live_counts(now=now, windows={"hour": timedelta(hours=1)}),
            "finished": selectors.finished_by_status(now=now, windows={"hour": timedelta(hours=1)}),
            "per_minute": selectors.throughput(now=now, window=timedelta(hours=1), step="minute"),
            "queues": selectors.queue_depths(),
        },
        refresh=refresh,
    )


def status_counts() -> dict:
    """The status table for the live counts stream, at most COUNTS_SECONDS old: the waiting and
    running states from the table (now, and created in each window: one index-only scan of
    their few rows), the final states' last hour from the rollups; their day and week move
    slowly and come from the history part (HISTORY_SECONDS), as on the page."""
    windows = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
    recent = _cached(
        COUNTS_KEY,
        COUNTS_SECONDS,
        lambda now: {
            "created": selectors.live_counts(now=now, windows=windows),
            "finished": selectors.finished_by_status(now=now, windows={"hour": windows["hour"]}),
        },
        refresh=False,
    )
    history = {"created": recent["created"], "finished": dashboard_history()["finished"]}
    columns = ("live", "hour", "day", "week")
    return {
        "computed_at": recent["computed_at"].isoformat(),
        "statuses": {row["status"]: {c: row[c] for c in columns} for row in status_rows(recent, history)},
    }


def dashboard_history(*, refresh: bool = False) -> dict:
    """The last day and week: they move slowly, so kept HISTORY_SECONDS."""
    windows = {"day": timedelta(days=1), "week": timedelta(days=7)}
    return _cached(
        HISTORY_KEY,
        HISTORY_SECONDS,
        lambda now: {
            "created": selectors.live_counts(now=now, windows=windows),
            "finished": selectors.finished_by_status(now=now, windows=windows),
            "per_hour": selectors.throughput(now=now, window=timedelta(days=7), step="hour"),
            "kinds": selectors.kind_stats(now=now, window=timedelta(days=1)),
        },
        refresh=refresh,
    )


def dashboard_limits(*, refresh: bool = False) -> dict:
    """The concurrency limits with what they hold now, and the owners with waiting work: a few
    small queries (selectors.limits_overview), kept CACHE_SECONDS; the admin drops them when it
    saves or deletes a limit, so an operator sees an edit at once."""
    overview = selectors.limits_overview
    return _cached(LIMITS_KEY, CACHE_SECONDS, lambda now: {"overview": overview(now=now)}, refresh=refresh)


def forget_dashboard_limits() -> None:
    cache.delete(LIMITS_KEY)


def inspection_supported() -> bool:
    # kombu's filesystem transport (the embedded mode) has no broadcast for remote control.
    return not settings.CELERY_BROKER_URL.startswith("filesystem")


def live_workers(*, refresh: bool = False) -> dict:
    """Workers that answered a remote-control inspection: concurrency, active tasks, totals."""
    if not inspection_supported():
        return {"supported": False, "workers": [], "checked_at": timezone.now()}
    data = None if refresh else cache.get(WORKERS_KEY)
    if data is not None:
        return data
    timeout = INSPECT_TIMEOUT
    error = ""
    # stats and active are two broadcasts; run them side by side so the wait is paid once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        stats_future = pool.submit(lambda: celery_app.control.inspect(timeout=timeout).stats())
        active_future = pool.submit(lambda: celery_app.control.inspect(timeout=timeout).active())
        try:
            stats = stats_future.result() or {}
            active = active_future.result() or {}
        except Exception as exc:  # the broker is down or refused: say so on the page
            logger.warning("worker inspection failed: %s", exc)
            stats, active, error = {}, {}, f"{type(exc).__name__}: {exc}"
    workers = []
    for name in sorted(set(stats) | set(active)):
        info = stats.get(name, {})
        running = active.get(name, [])
        workers.append(
            {
                "name": name,
                "concurrency": (info.get("pool") or {}).get("max-concurrency"),
                "processed": sum((info.get("total") or {}).values()),
                "active": [
                    {
                        "task_id": item.get("id"),
                        "name": item.get("name"),
                        "is_taskflow_task": item.get("name") == RUN_TASK,
                        "started": item.get("time_start"),
                    }
                    for item in running
                ],
            }
        )
    data = {"supported": True, "workers": workers, "error": error, "checked_at": timezone.now()}
    cache.set(WORKERS_KEY, data, WORKERS_CACHE_SECONDS)
    return data


# --- Charts (server-rendered SVG: nothing to load, works offline) ------------------------------

CHART_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828"}


def bar_chart(buckets, *, label_format: str, label_every: int, title: str) -> str:
    """Stacked bars (succeeded below, failed on top) with a tooltip per bucket."""
    width, height = 760, 180
    left, right, top, bottom = 44, 8, 10, 24
    plot_width, plot_height = width - left - right, height - top - bottom
    peak = max((bucket.succeeded + bucket.failed for bucket in buckets), default=0)
    scale = plot_height / peak if peak else 0
    slot = plot_width / max(len(buckets), 1)
    bar_width = max(slot - 1, 1)
    bars, labels = [], []
    for index, bucket in enumerate(buckets):
        x = left + index * slot
        ok_height = bucket.succeeded * scale
        failed_height = bucket.failed * scale
        tooltip = (
            f"{timezone.localtime(bucket.start).strftime(label_format)}: "
            f"{bucket.succeeded} succeeded, {bucket.failed} failed"
        )
        # Numbers and our own colours; only the tooltip is text (escaped): a plain f-string
        # per bar instead of format_html's escaping of eleven arguments (168 bars a chart).
        bars.append(
            f'<g><title>{escape(tooltip)}</title><rect x="{x:.1f}" y="{top + plot_height - ok_height:.1f}" '
            f'width="{bar_width:.1f}" height="{ok_height:.1f}" fill="{CHART_COLOURS["succeeded"]}"/>'
            f'<rect x="{x:.1f}" y="{top + plot_height - ok_height - failed_height:.1f}" width="{bar_width:.1f}" '
            f'height="{failed_height:.1f}" fill="{CHART_COLOURS["failed"]}"/></g>'
        )
        if index % label_every == 0:
            labels.append(
                format_html(
                    '<text x="{}" y="{}" class="tf-axis">{}</text>',
                    f"{x:.1f}",
                    height - 6,
                    timezone.localtime(bucket.start).strftime(label_format),
                )
            )
    return format_html(
        '<svg class="tf-chart" viewBox="0 0 {w} {h}" role="img" aria-label="{title}" preserveAspectRatio="none">'
        '<line x1="{l}" y1="{base}" x2="{r}" y2="{base}" class="tf-grid"/>'
        '<line x1="{l}" y1="{t}" x2="{r}" y2="{t}" class="tf-grid"/>'
        '<text x="4" y="{t_label}" class="tf-axis">{peak}</text>'
        '<text x="4" y="{base}" class="tf-axis">0</text>{bars}{labels}</svg>',
        w=width,
        h=height,
        title=title,
        l=left,
        r=width - right,
        t=top,
        t_label=top + 8,
        base=top + plot_height,
        peak=peak,
        bars=mark_safe("".join(bars)),
        labels=mark_safe("".join(labels)),
    )


STATUS_ORDER = [
    TaskStatus.PENDING,
    TaskStatus.QUEUED,
    TaskStatus.RUNNING,
    TaskStatus.RETRYING,
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
]


def status_rows(recent: dict, history: dict) -> list[dict]:
    """The status table's rows from the recent part (live counts, the hour) and the history part."""
    rows = []
    for status in STATUS_ORDER:
        # Live states: created in the window and still there; final ones: reached in the window.
        source = "finished" if status in FINAL_STATUSES else "created"
        rows.append(
            {
                "status": str(status),
                "label": TaskStatus(status).label,
                "live": recent["created"][status]["now"] if status in selectors.LIVE_STATUSES else None,
                "hour": recent[source][status]["hour"],
                "day": history[source][status]["day"],
                "week": history[source][status]["week"],
            }
        )
    return rows


def _age(data: dict) -> int:
    return max(int((timezone.now() - data["computed_at"]).total_seconds()), 0)


def dashboard_view(request, model_admin):
    refresh = request.GET.get("refresh") == "1"
    if refresh:
        rollups.refresh()
    recent, history = dashboard_recent(refresh=refresh), dashboard_history(refresh=refresh)
    limits = dashboard_limits(refresh=refresh)
    overview = limits["overview"]
    rollup_state = rollups.state()
    kinds = history["kinds"]
    per_minute, per_hour = recent["per_minute"], history["per_hour"]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Task dashboard",
        "opts": model_admin.opts,
        "status_rows": status_rows(recent, history),
        "minute_chart": bar_chart(
            per_minute, label_format="%H:%M", label_every=10, title="Finished tasks per minute, last hour"
        ),
        "hour_chart": bar_chart(
            per_hour, label_format="%a %Hh", label_every=24, title="Finished tasks per hour, last week"
        ),
        "minute_totals": _totals(per_minute),
        "hour_totals": _totals(per_hour),
        "slowest": [_kind_row(k) for k in sorted((k for k in kinds if k.p95 is not None), key=lambda k: -k.p95)][
            :TOP_KINDS
        ],
        "failing": [
            _kind_row(k) for k in sorted((k for k in kinds if k.failed), key=lambda k: (-k.failed, -k.failure_rate))
        ][:TOP_KINDS],
        "queues": sorted(recent["queues"].items()),
        "limits": overview,
        "kind_limits": sorted(overview.kinds.items()),
        "owners_at_limit": overview.owners_at_limit[:OWNERS_AT_LIMIT_SHOWN],
        "owners_at_limit_more": max(len(overview.owners_at_limit) - OWNERS_AT_LIMIT_SHOWN, 0),
        "own_owner_limits": sum(use.own for use in overview.owners.values()),
        "limits_age": _age(limits),
        "recent_age": _age(recent),
        "history_age": _age(history),
        "recent_seconds": CACHE_SECONDS,
        "history_seconds": HISTORY_SECONDS,
        "inspection_supported": inspection_supported(),
        "rollups_refreshed_at": rollup_state.refreshed_at if rollup_state else None,
        "rollup_seconds": settings.TASK_ROLLUP_INTERVAL,
    }
    return TemplateResponse(request, "admin/tasks/task/dashboard.html", context)


def _kind_row(stats: selectors.KindStats) -> dict:
    def seconds(value):
        return duration_text(timedelta(seconds=value)) if value is not None else "—"

    return {
        "kind": stats.kind,
        "finished": stats.finished,
        "failed": stats.failed,
        "failure_rate": f"{100 * stats.failure_rate:.1f} %",
        "p50": seconds(stats.p50),
        "p95": seconds(stats.p95),
    }


def _totals(buckets) -> dict:
    succeeded = sum(bucket.succeeded for bucket in buckets)
    failed = sum(bucket.failed for bucket in buckets)
    return {"succeeded": succeeded, "failed": failed, "finished": succeeded + failed}


def dashboard_workers_view(request, model_admin):
    data = live_workers(refresh=request.GET.get("refresh") == "1")
    context = {
        **data,
        "timeout": INSPECT_TIMEOUT,
        "age_seconds": max(int((timezone.now() - data["checked_at"]).total_seconds()), 0),
    }
    return TemplateResponse(request, "admin/tasks/task/dashboard_workers.html", context)


def duration_text(delta: timedelta | None) -> str:
    """A duration as people read it: 0.42 s, 12.3 s, 4 min 5 s, 3 h 4 min, 2 d 3 h."""
    if delta is None:
        return "—"
    seconds = delta.total_seconds()
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
