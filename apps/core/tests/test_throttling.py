"""Rate limits: one atomic Redis script per request, per user or client IP, stricter for auth."""

import logging
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from apps.core import throttling
from apps.core.tests.test_project import run_manage
from conftest import PASSWORD
from tests.support.processes import gunicorn_command, http

KINDS = "/api/kinds/"
TOKEN = "/api/auth/token/"
REGISTER = "/api/auth/register/"
REFRESH = "/api/auth/token/refresh/"


HAMMER = """
import sys, time, django
django.setup()
from apps.core import throttling
url, key, limit, hits, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
limiter = throttling.RedisLimiter(url)
time.sleep(max(0.0, start_at - time.time()))
print(sum(limiter.hit(key, limit=limit, period=3600).allowed for _ in range(hits)))
"""


def test_a_concurrent_burst_from_several_processes_lets_exactly_the_limit_through():
    # Separate interpreters (not forks of this multi-threaded test process) that share
    # nothing but Redis, all starting at the same moment.
    processes, hits, limit = 6, 40, 50
    key = f"test-ratelimit:{uuid.uuid4().hex}:burst"
    start_at = time.time() + 8  # after every interpreter has set Django up
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "taskflow_site.settings"}
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, django_settings.REDIS_URL, key, str(limit), str(hits), str(start_at)],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [client.communicate(timeout=90) for client in clients]
    assert all(client.returncode == 0 for client in clients), [err for _, err in outputs]
    allowed = [int(out.strip()) for out, _ in outputs]
    assert sum(allowed) == limit, allowed


@pytest.mark.django_db(transaction=True)
def test_two_gunicorn_workers_let_exactly_the_limit_through_a_concurrent_burst(owner, web_env, start_web):
    web = start_web(web_env | {"RATE_LIMIT_USER": "25/hour"}, gunicorn_command(workers=2, worker_class="sync"))
    headers = {"Authorization": f"Bearer {RefreshToken.for_user(owner).access_token}"}
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: http("GET", web.url(KINDS), headers=headers), range(60)))
    statuses = [response.status for response in responses]
    assert statuses.count(200) == 25, statuses
    assert statuses.count(429) == 35, statuses
    # (Which worker answers is the kernel's choice; on a loaded machine one may take all.)
    throttled = next(response for response in responses if response.status == 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["code"] == "throttled"


@pytest.mark.django_db
def test_a_throttled_call_is_429_with_retry_after_and_the_error_shape(owner_api, settings, rate_limit_prefix):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user": "2/min"}
    assert [owner_api.get(KINDS).status_code for _ in range(2)] == [200, 200]
    response = owner_api.get(KINDS)
    assert response.status_code == 429
    # 2/min: the next request is allowed 30 s after the bucket was full.
    assert 1 <= int(response["Retry-After"]) <= 30
    body = response.json()
    assert body["error"]["code"] == "throttled"
    assert body["error"]["message"].startswith("Request was throttled.")
    assert set(body) == {"error"}


@pytest.mark.django_db
def test_every_user_has_a_bucket_of_their_own(owner_api, other_api, settings, rate_limit_prefix):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user": "2/min"}
    assert [owner_api.get(KINDS).status_code for _ in range(3)] == [200, 200, 429]
    assert [other_api.get(KINDS).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.django_db
def test_anonymous_clients_are_limited_per_ip(settings, rate_limit_prefix):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth": "2/min"}
    first, second = APIClient(REMOTE_ADDR="192.0.2.1"), APIClient(REMOTE_ADDR="192.0.2.2")
    assert [first.post(TOKEN, {}).status_code for _ in range(3)] == [400, 400, 429]
    assert second.post(TOKEN, {}).status_code == 400


@pytest.mark.django_db
def test_forwarded_for_is_ignored_without_trusted_proxies(settings, rate_limit_prefix):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth": "2/min"}
    settings.NUM_PROXIES = 0
    client = APIClient(REMOTE_ADDR="192.0.2.1")
    statuses = [client.post(TOKEN, {}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(3)]
    assert statuses == [400, 400, 429], "a client cannot pick a fresh bucket with a made-up header"


@pytest.mark.django_db
def test_behind_one_proxy_the_client_is_the_address_the_proxy_appended(settings, rate_limit_prefix):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth": "2/min"}
    settings.NUM_PROXIES = 1
    proxy = APIClient(REMOTE_ADDR="10.0.0.5")
    # The client may send its own X-Forwarded-For; the proxy appends the real address.
    spoofed = [proxy.post(TOKEN, {}, HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 192.0.2.7").status_code for n in range(3)]
    assert spoofed == [400, 400, 429]
    assert proxy.post(TOKEN, {}, HTTP_X_FORWARDED_FOR="192.0.2.8").status_code == 400


@pytest.mark.django_db
def test_register_token_and_refresh_share_a_stricter_bucket_than_other_calls(
    owner, owner_api, settings, rate_limit_prefix
):
    settings.RATE_LIMITS = {"user": "100/min", "anon": "100/min", "auth": "3/min"}
    client = APIClient(REMOTE_ADDR="192.0.2.9")
    login = client.post(TOKEN, {"email": owner.email, "password": PASSWORD})
    assert login.status_code == 200
    assert client.post(REFRESH, {"refresh": login.json()["refresh"]}).status_code == 200
    assert client.post(REGISTER, {}).status_code == 400
    assert client.post(REGISTER, {}).status_code == 429
    assert client.post(TOKEN, {"email": owner.email, "password": PASSWORD}).status_code == 429
    assert [owner_api.get(KINDS).status_code for _ in range(5)] == [200] * 5


@pytest.mark.django_db
def test_without_redis_a_local_limiter_applies_and_says_so_once(owner_api, settings, caplog):
    settings.REDIS_URL = ""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user": "2/min"}
    throttling._local_limiter.cache_clear()
    with caplog.at_level(logging.WARNING, logger="apps.core.throttling"):
        statuses = [owner_api.get(KINDS).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    warnings = [record.getMessage() for record in caplog.records if record.name == "apps.core.throttling"]
    assert len(warnings) == 1
    assert "REDIS_URL is not set" in warnings[0]
    throttling._local_limiter.cache_clear()


@pytest.mark.django_db
def test_an_unreachable_redis_lets_calls_through_and_warns(owner_api, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user": "1/min"}
    throttling._last_store_warning = 0.0
    with caplog.at_level(logging.WARNING, logger="apps.core.throttling"):
        statuses = [owner_api.get(KINDS).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert any("rate limits not enforced" in record.getMessage() for record in caplog.records)


def test_local_limiter_allows_the_limit_at_once_then_one_per_interval():
    limiter = throttling.LocalLimiter()
    decisions = [limiter.hit("k", limit=3, period=60) for _ in range(4)]
    assert [decision.allowed for decision in decisions] == [True, True, True, False]
    assert 19 < decisions[-1].retry_after <= 20


def test_a_rate_above_a_million_per_second_still_counts_in_redis(settings):
    limiter = throttling.RedisLimiter(settings.REDIS_URL)
    key = f"test-ratelimit:{uuid.uuid4().hex}:fast"
    decisions = [limiter.hit(key, limit=10_000_000, period=1) for _ in range(3)]
    assert all(decision.allowed for decision in decisions)


def test_rates_are_parsed_as_a_count_per_period():
    assert throttling.parse_rate("600/min") == (600, 60)
    assert throttling.parse_rate("10/s") == (10, 1)
    assert throttling.parse_rate("5/hour") == (5, 3600)
    assert throttling.parse_rate("1000/day") == (1000, 86400)
    with pytest.raises(ValueError):
        throttling.parse_rate("0/min")


def test_a_malformed_rate_setting_fails_loudly_at_start():
    result = run_manage("check", env_overrides={"RATE_LIMIT_USER": "lots"})
    assert result.returncode != 0
    assert "RATE_LIMIT_USER must look like 600/min" in result.stderr
