import uuid

import pytest

from apps.core import throttling


@pytest.fixture
def rate_limit_prefix(monkeypatch):
    """Buckets of this test only: the test Redis keeps its keys for the whole session."""
    prefix = f"test-ratelimit:{uuid.uuid4().hex}"
    monkeypatch.setattr(throttling, "KEY_PREFIX", prefix)
    return prefix
