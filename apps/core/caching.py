"""Small cache helpers shared by the apps."""

import logging
from collections.abc import Callable

from django.core.cache import cache

logger = logging.getLogger(__name__)


def cached(key: str, *, timeout: int, build: Callable):
    """cache.get_or_set that still answers, with a freshly built value, when the cache is down."""
    try:
        return cache.get_or_set(key, build, timeout=timeout)
    except Exception as exc:  # django-redis raises its client's errors; the value can still be built
        logger.warning("cache unavailable for %s: %s", key, exc)
        return build()
