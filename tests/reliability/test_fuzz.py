"""API fuzzing: schemathesis generates requests from /api/schema/ and checks every answer.

In process, through the Django WSGI application, on the test database: valid and invalid
requests for every operation, as a signed-in user (JWT) and anonymously. The checks are
schemathesis' own: no 5xx, status codes, content types, headers and bodies as the schema
says, invalid data rejected (4xx), and authentication not ignored (a request without
credentials is refused). Examples are derandomized (the same every run) and bounded per
operation, so the run takes about a minute; set FUZZ_EXAMPLES for a longer hunt.

What the fuzzing found is pinned by explicit tests in test_fuzz_regressions.py.
"""

import os
import socket
import time

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from . import report

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def offline_dns(monkeypatch):
    """Webhook URLs are resolved before they are accepted: keep that on this machine.

    Names other than localhost fail to resolve, as they would without a network; IP
    literals still go through the real address checks."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except (OSError, ValueError):
            if host != "localhost":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def keep_test_connection():
    """Django closes the database connection after each request; in a test that would end
    the test's transaction. Its test client unhooks the same signals while it calls."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(s3_storage, offline_dns, keep_test_connection):
    """The schema as the app serves it; files go to the S3 stand-in, as in the real stack."""
    from taskflow_site.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


def fuzz(
    schema, *, headers: dict, mode: GenerationMode, checks: list, examples: int = EXAMPLES
) -> tuple[int, list[str]]:
    """Run every operation with `examples` generated cases; returns (calls, failures)."""
    calls, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            nonlocal calls
            calls += 1
            try:
                # Each example in a savepoint rolled back after it: examples start from the same
                # data, and a database error in one does not abort the test's transaction.
                with transaction.atomic():
                    case.call_and_validate(headers=headers, checks=checks)
                    transaction.set_rollback(True)
            except (Exception, FailureGroup) as exc:  # collect them all: one report, no shrinking
                label = f"{case.operation.label} [{mode.value}] {case.method} {case.formatted_path}"
                failures.append(f"{label}: {exc}"[:2000])

        run()
    return calls, failures


def test_fuzzing_as_a_signed_in_user_finds_nothing(api_schema, owner):
    headers = {"Authorization": f"Bearer {AccessToken.for_user(owner)}"}
    started = time.monotonic()
    positive_calls, failures = fuzz(
        api_schema, headers=headers, mode=GenerationMode.POSITIVE, checks=[*POSITIVE_CHECKS, ignored_auth]
    )
    negative_calls, negative_failures = fuzz(
        api_schema, headers=headers, mode=GenerationMode.NEGATIVE, checks=[not_a_server_error, negative_data_rejection]
    )
    failures += negative_failures
    report.record_check(
        "fuzz",
        {
            "requests": positive_calls + negative_calls,
            "operations": len(list(api_schema.get_all_operations())),
            "examples_per_operation": EXAMPLES,
            "failures": len(failures),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert failures == [], "\n\n".join(failures)


def test_fuzzing_anonymously_finds_nothing(api_schema):
    """Without credentials nearly everything is a 401 before the input is looked at: fewer examples."""
    calls, failures = fuzz(
        api_schema, headers={}, mode=GenerationMode.POSITIVE, checks=POSITIVE_CHECKS, examples=max(EXAMPLES // 2, 1)
    )
    report.record_check("fuzz_anonymous", {"requests": calls, "failures": len(failures)})
    assert failures == [], "\n\n".join(failures)
