"""Bare Celery, the baseline of rows 1 and 2: no Django, no database, one no-op task.

The worker runs with the same command-line flags as TaskFlow's (bench/run.py WORKER_FLAGS)
and the same delivery settings as taskflow_site/celery.py: late acks, Celery's default prefetch, JSON,
results ignored. Each execution increments a Redis counter and stamps its end time (one pipelined round
trip, the price of being able to tell at all), which is how the bench knows that all N ran.
"""

import os
import time

import redis
from celery import Celery

QUEUE = "bench_bare"
COUNTER_KEY = "bench:bare:executed"
LAST_KEY = "bench:bare:last_finished_at"

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")

app = Celery("bench_bare", broker=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)

_client = None


def counter() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


@app.task(name="bench.bare_noop", ignore_result=True, acks_late=True)
def bare_noop(echo=None):
    # One round trip: count the execution and stamp when the latest one ended, so the bench
    # can poll slowly and still know when the last task ran (TaskFlow's side has finished_at).
    counter().pipeline(transaction=False).incr(COUNTER_KEY).set(LAST_KEY, repr(time.time())).execute()
    return {"echo": echo}
