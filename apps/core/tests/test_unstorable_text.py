"""Text PostgreSQL cannot store (NUL, lone surrogates) is refused at the edge: a 400 naming
the field, in the one error shape, and nothing written. See apps/core/text.py."""

import json

import pytest
from django.contrib.auth import get_user_model

from apps.core.text import storable_json_problem, storable_text
from apps.tasks.models import Schedule, Task
from apps.webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db

NUL, SURROGATE = "\x00", "\ud800"


def post_json(client, url, body):
    # ensure_ascii: a lone surrogate travels as the escape "\ud800", as any JSON client sends it.
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json")


def counts() -> dict:
    return {
        "tasks": Task.objects.count(),
        "schedules": Schedule.objects.count(),
        "webhooks": WebhookEndpoint.objects.count(),
        "users": get_user_model().objects.count(),
    }


NOOP = {"kind": "demo.noop"}
SCHEDULE = {"name": "nightly", "kind": "demo.noop", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}
CASES = {
    "payload value NUL": ("/api/tasks/", {"kind": "demo.noop", "payload": {"echo": f"a{NUL}b"}}, "payload.echo"),
    "payload key NUL": ("/api/tasks/", NOOP | {"payload": {"echo": {f"k{NUL}": 1}}}, "payload.echo.k\ufffd"),
    "payload lone surrogate": ("/api/tasks/", NOOP | {"payload": {"echo": [1, SURROGATE]}}, "payload.echo[1]"),
    # Decoded to infinity, which jsonb refuses: sent as the literal a client would write.
    "payload number past a float": ("/api/tasks/", '{"kind": "demo.noop", "payload": {"echo": 1e400}}', "payload.echo"),
    "title lone surrogate": ("/api/tasks/", {"kind": "demo.noop", "title": SURROGATE}, "title"),
    "bulk item": (
        "/api/tasks/bulk/",
        {"tasks": [{"kind": "demo.noop"}, {"kind": "demo.noop", "payload": {"echo": {"x": NUL}}}]},
        "tasks[1].payload.echo.x",
    ),
    "schedule payload": ("/api/schedules/", SCHEDULE | {"payload": {"echo": SURROGATE}}, "payload.echo"),
    "webhook description": (
        "/api/webhooks/",
        {"url": "https://93.184.216.34/hook", "description": f"hook{SURROGATE}"},
        "description",
    ),
}


@pytest.mark.parametrize(("url", "body", "field"), CASES.values(), ids=CASES.keys())
def test_unstorable_text_in_a_json_body_is_a_400_naming_the_field_and_writes_nothing(owner_api, url, body, field):
    before = counts()
    response = post_json(owner_api, url, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [field]
    assert counts() == before


def test_register_with_a_lone_surrogate_in_full_name_is_a_400_and_creates_no_user(api):
    before = counts()
    body = {"email": "new@example.com", "password": "a-long-pass-phrase-9", "full_name": f"Nina{SURROGATE}"}
    response = post_json(api, "/api/auth/register/", body)
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["full_name"]
    assert counts() == before


def test_nul_in_a_form_body_is_a_400_naming_the_field(api):
    before = counts()
    body = {"email": "new@example.com", "password": "a-long-pass-phrase-9", "full_name": f"Nina{NUL}"}
    response = api.post("/api/auth/register/", body)  # multipart, as a form would send it
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == ["full_name"]
    assert counts() == before


@pytest.mark.parametrize(
    ("url", "params", "name"),
    [
        ("/api/tasks/", "kind=%00", "kind"),
        ("/api/tasks/", "search=a%00b", "search"),
        ("/api/tasks/", "cursor=%00", "cursor"),
        ("/api/tasks/", "status=failed&title%00=x", "title\ufffd"),
        ("/api/files/", "search=%00", "search"),
        ("/api/schedules/", "kind=%00", "kind"),
        ("/api/webhook-deliveries/", "cursor=%00", "cursor"),
        ("/api/kinds/", "x=%00", "x"),
    ],
)
def test_nul_in_a_query_parameter_is_a_400_naming_the_parameter(owner_api, url, params, name):
    response = owner_api.get(f"{url}?{params}")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid" and list(error["fields"]) == [name]
    assert response["X-Request-ID"]


def test_the_query_guard_answers_anonymous_callers_too(api):
    response = api.get("/api/tasks/?kind=%00")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["kind"]


def test_storable_text_replaces_nul_and_lone_surrogates_only():
    assert storable_text(f"a{NUL}b{SURROGATE}c😀") == "a\ufffdb\ufffdc😀"


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ({"a": [1, {"b": NUL}]}, "result.a[1].b contains NUL"),
        ({f"k{SURROGATE}": 1}, "result.k\ufffd has a key that contains an unpaired surrogate"),
        ({"x": float("nan")}, "result.x is a number out of range"),
        ({"x": {1, 2}}, "result is not JSON"),
    ],
)
def test_results_postgresql_cannot_store_are_named_by_their_path(result, problem):
    assert storable_json_problem(result, root="result").startswith(problem)


@pytest.mark.parametrize("result", [{"text": "a\\u0000 literal backslash", "emoji": "😀", "n": 10**40}, None, [], "x"])
def test_storable_results_pass(result):
    assert storable_json_problem(result, root="result") is None


# --- The admin -----------------------------------------------------------------------------


def admin_filter_parameters() -> list[tuple[str, str]]:
    """(changelist URL, parameter) for the search box and every list filter of every ModelAdmin."""
    from django.contrib import admin
    from django.test import RequestFactory
    from django.urls import reverse

    superuser = get_user_model()(email="probe@example.com", is_staff=True, is_superuser=True)
    cases = []
    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        request = RequestFactory().get(url)
        request.user = superuser
        changelist = model_admin.get_changelist_instance(request)
        names = {"q"} | {name for spec in changelist.filter_specs for name in spec.expected_parameters()}
        cases += [(url, name) for name in sorted(names) if name]
    return cases


def test_nul_in_any_admin_filter_or_search_is_a_400(staff_client):
    cases = admin_filter_parameters()
    assert {url.split("/")[3] for url, _ in cases} >= {"task", "schedule", "storedfile", "webhookendpoint", "user"}
    answers = {(url, name): staff_client.get(f"{url}?{name}=a%00b").status_code for url, name in cases}
    assert set(answers.values()) == {400}, {case: status for case, status in answers.items() if status != 400}


def test_nul_in_the_admin_autocompletes_is_a_400(staff_client):
    from django.urls import reverse

    owners = reverse("admin:tasks_task_owners")
    assert staff_client.get(f"{owners}?term=%00").status_code == 400
    autocomplete = "/admin/autocomplete/?app_label=tasks&model_name=task&field_name=owner&term=%00"
    assert staff_client.get(autocomplete).status_code == 400
