"""Small pieces both clients use: deadlines, stream time-outs, ids, settings from the environment."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from .errors import WaitTimeout

# A stream sends heartbeats; this long without a byte means the connection is dead: reconnect.
STREAM_READ_TIMEOUT = 60.0
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, read=300.0)


def remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout("The task was not final in time.", code="wait_timeout")
    return left


def stream_timeout(left: float | None) -> httpx.Timeout:
    return httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT if left is None else min(left, STREAM_READ_TIMEOUT))


def task_id_of(task: Any) -> str:
    return str(getattr(task, "id", task))


def resolve_settings(url: str | None, api_key: str | None, email: str | None) -> tuple[str, str | None]:
    """The base URL and API key, from the arguments or TASKFLOW_URL / TASKFLOW_API_KEY."""
    url = url or os.environ.get("TASKFLOW_URL")
    if not url:
        raise ValueError("no TaskFlow URL: pass one or set TASKFLOW_URL")
    if api_key is None and email is None:
        api_key = os.environ.get("TASKFLOW_API_KEY") or None
    return url.rstrip("/"), api_key
