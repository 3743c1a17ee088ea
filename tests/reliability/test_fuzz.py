"""API fuzzing: schemathesis generates requests from /api/schema/ and checks every answer.

In process, through the Django WSGI application, on the test database: valid and invalid
requests for every operation, as a signed-in user (JWT) and anonymously. The checks are
schemathesis' own: no 5xx, status codes, content types, headers and bodies as the schema
says, invalid data rejected (4xx), and authentication not ignored (a request without
credentials is refused). Examples are derandomized (the same every run) and bounded per
operation, so the run takes about a minute; set FUZZ_EXAMPLES for a longer hunt.

A third pass is hostile: valid requests with one value (or key) swapped for text PostgreSQL
cannot store (NUL, lone surrogates), numbers past every limit (1e400, 10**400), dates at the
edges of the calendar and of UTC offsets, and zone names that are not canonical IANA zones,
in the query or anywhere in the body. Schemathesis' own strings seldom hold these (it draws
no surrogates at all), so they are put there. The only check: no 5xx.

What the fuzzing found is pinned by explicit tests in test_fuzz_regressions.py.
"""

import copy
import json
import os
import socket
import time

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
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
HOSTILE_EXAMPLES = max(EXAMPLES // 2, 1)
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# What a careless or hostile client puts where the schema says "string", "number" or "date-time".
HOSTILE_TEXT = ["\x00", "a\x00b", "x\u0000"]
HOSTILE_NUMBERS = [10**400, -(10**400), 2**63, -(2**63) - 1, 1.7976931348623157e308, -0.0]
ODD_TIMES = [
    "0001-01-01T00:00:00+14:00",  # before the first representable instant in UTC
    "9999-12-31T23:59:59-14:00",  # after the last
    "2024-06-01T12:00:00+23:59",
    "2024-06-01T12:00:00-00:00",
    "2024-02-30T00:00:00Z",
    "2024-03-31T02:30:00",  # no offset: a time that does not exist in Europe/Berlin
]
ODD_ZONES = ["localtime", "posixrules", "Factory", "right/UTC", "Etc/GMT+14", "EST5EDT", "../../etc/passwd"]
HOSTILE_QUERY_VALUES = [*HOSTILE_TEXT, *ODD_TIMES, *ODD_ZONES, "1e400", str(10**400), "-1"]
# JSON carries lone surrogates as escapes ("\ud800"); the raw literal 1e400 decodes to infinity.
HUGE_LITERAL = "<1e400>"
HOSTILE_BODY_VALUES = [*HOSTILE_TEXT, "\ud800", "x\udfffy", *HOSTILE_NUMBERS, *ODD_TIMES, *ODD_ZONES, HUGE_LITERAL]
HOSTILE_KEYS = ["\x00", "k\x00", "\ud800"]


def _body_slots(body) -> list[tuple]:
    """(container, key) for every value in a JSON body, and (dict, None) for a key to add."""
    slots, stack = [], [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            slots += [(item, key) for key in item] + [(item, None)]
            stack.extend(item.values())
        elif isinstance(item, list):
            slots += [(item, index) for index in range(len(item))]
            stack.extend(item)
    return slots


@st.composite
def hostile_cases(draw, operation):
    """A valid case of `operation` with one query value, or body values and keys, made hostile:
    one for sure, each other body value with even odds (one bad value is often refused before
    the next is looked at). A body's `kind` becomes a real one with even odds: the generator
    cannot know the kinds, and payloads of unknown kinds are refused before they are stored."""
    case = draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    json_body = "json" in (case.media_type or "") and isinstance(case.body, dict | list)
    query = dict(case.query or {})
    body = copy.deepcopy(case.body) if json_body else None
    if isinstance(body, dict) and "kind" in body and draw(st.booleans()):
        body["kind"] = "demo.noop"
    slots = [(query, name) for name in query] + [(query, None)] + (_body_slots(body) if json_body else [])
    first = draw(st.sampled_from(slots))
    huge_literal = False
    for container, key in slots:
        if (container, key) != first and (first[0] is query or container is query or not draw(st.booleans())):
            continue
        in_query = container is query
        value = draw(st.sampled_from(HOSTILE_QUERY_VALUES if in_query else HOSTILE_BODY_VALUES))
        if key is None:
            key = draw(st.sampled_from(HOSTILE_KEYS[:2] if in_query else HOSTILE_KEYS))
        container[key] = value
        huge_literal = huge_literal or value == HUGE_LITERAL
    case.query = query
    if json_body:
        # Sent as the bytes a client would send: the literal 1e400 cannot be a Python value, and
        # schemathesis re-validates a dict body before the call with a regex engine that cannot
        # encode a lone surrogate (the request would never leave the test).
        text = json.dumps(body)
        case.body = (text.replace(json.dumps(HUGE_LITERAL), "1e400") if huge_literal else text).encode()
    return case


class Hostile:
    """fuzz()'s third mode: an operation whose cases are hostile_cases. (The loop in fuzz()
    stays as it was: Hypothesis derives its derandomized seed from that code, and the
    positive and negative passes should keep drawing the examples they always drew.)"""

    value = "hostile"

    def __init__(self, operation):
        self.operation = operation

    def as_strategy(self, generation_mode):
        return hostile_cases(self.operation)


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
    schema, *, headers: dict, mode: GenerationMode | type[Hostile], checks: list, examples: int = EXAMPLES
) -> tuple[int, list[str]]:
    """Run every operation with `examples` generated cases; returns (calls, failures)."""
    calls, failures = 0, []
    for result in schema.get_all_operations():
        operation = Hostile(result.ok()) if mode is Hostile else result.ok()

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


@pytest.mark.slow
def test_fuzzing_as_a_signed_in_user_finds_nothing(api_schema, owner):
    headers = {"Authorization": f"Bearer {AccessToken.for_user(owner)}"}
    started = time.monotonic()
    positive_calls, failures = fuzz(
        api_schema, headers=headers, mode=GenerationMode.POSITIVE, checks=[*POSITIVE_CHECKS, ignored_auth]
    )
    negative_calls, negative_failures = fuzz(
        api_schema, headers=headers, mode=GenerationMode.NEGATIVE, checks=[not_a_server_error, negative_data_rejection]
    )
    hostile_calls, hostile_failures = fuzz(
        api_schema, headers=headers, mode=Hostile, checks=[not_a_server_error], examples=HOSTILE_EXAMPLES
    )
    failures += negative_failures + hostile_failures
    report.record_check(
        "fuzz",
        {
            "requests": positive_calls + negative_calls + hostile_calls,
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
