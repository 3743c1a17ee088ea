"""After-commit callbacks as the tests count them."""

import functools

from apps.tasks import live


def besides_live_notices(callbacks: list) -> list:
    """The callbacks a test means, without the live streams' notices (apps/tasks/live.py), which
    every transition that writes history registers besides its own work."""
    return [
        callback
        for callback in callbacks
        if not (isinstance(callback, functools.partial) and callback.func is live._publish_now)
    ]
