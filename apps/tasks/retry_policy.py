"""What a failed run leads to: another attempt after a backoff, or failure."""

import random
from datetime import datetime, timedelta

from .models import Task
from .registry import get_kind
from .state_machine import FAIL, FAIL_TO_RETRY, REAP_TO_FAILED, REAP_TO_RETRY, Transition


def retry_delay(*, attempt: int, backoff: float, backoff_max: float) -> float:
    """Exponential backoff with equal jitter: between half and all of min(backoff·2^(n-1), max)."""
    cap = min(backoff * 2 ** max(attempt - 1, 0), backoff_max)
    return cap / 2 + random.uniform(0, cap / 2)


def after_failure(
    task: Task, *, error: str, traceback: str, permanent: bool, now: datetime, reaped: bool = False
) -> tuple[Transition, dict]:
    """The transition out of a failed run (ended by the run itself, or `reaped`), with its values."""
    kind = get_kind(task.kind)
    error = error[:5000]
    if not permanent and kind is not None and task.attempts <= task.max_retries:
        delay = retry_delay(attempt=task.attempts, backoff=kind.retry_backoff, backoff_max=kind.retry_backoff_max)
        values = {"error": error, "traceback": traceback, "run_at": now + timedelta(seconds=delay)}
        return (REAP_TO_RETRY if reaped else FAIL_TO_RETRY), values
    return (REAP_TO_FAILED if reaped else FAIL), {"error": error, "traceback": traceback}
