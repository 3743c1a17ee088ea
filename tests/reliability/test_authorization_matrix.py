"""Who may do what: every endpoint of the URL configuration, for every role → the expected status.

The tests walk `get_resolver()`: an endpoint (or an HTTP method of one) without a row in
the tables below fails `test_every_endpoint_has_a_row`, so nothing ships unreviewed.

API roles: anonymous, the owner of the objects, another user, a Viewer and an Operator
(staff in the groups of accounts.0002/0003_roles) and a superuser. Requests carry real
credentials (a JWT in Authorization), so the authentication classes are exercised too. The
rules under test: another user's object is a 404 (never a 403 that confirms it exists), and
another user's list holds none of the owner's objects; staff read everyone's objects, but a
write on one they do not own needs the model permission the admin asks for (403 without it),
and every such write lands in the audit trail; a refused request changes nothing.

Admin roles: anonymous, a signed-in non-staff user, a Viewer and an Operator (the groups
of accounts.0002_roles). Every admin page of every registered model and every bulk action.
"""

import json
import uuid
from dataclasses import dataclass

import pytest
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.forms.models import model_to_dict
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create
from apps.core.models import AuditEntry
from apps.files.models import StoredFile
from apps.files.services import stored_file_create
from apps.tasks.models import Schedule, Task, TaskEvent, TaskStatus
from apps.tasks.schedule_services import ScheduleSpec, schedule_create
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.support.sse import close_streamed

from . import report

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "owner", "other", "viewer", "operator", "superuser")
STAFF_ROLES = ("viewer", "operator", "superuser")
ADMIN_ROLES = ("anonymous", "user", "viewer", "operator")

# --- The API matrix ------------------------------------------------------------------------
# url name → {method: (path, body, {role: status})}. Paths use the owner's objects:
# {task} a failed task, {queued} a queued one, {file}, {schedule}, {endpoint}, {delivery}, {key}.
ANON = 401
ALL_OK = dict.fromkeys(ROLES, 200)


def signed_in(status, *, other=None, staff=None):
    """Anonymous → 401; the owner gets `status`; another user and staff as given (default: the same)."""
    return {
        "anonymous": ANON,
        "owner": status,
        "other": status if other is None else other,
        **dict.fromkeys(STAFF_ROLES, status if staff is None else staff),
    }


def owners_object(status):
    """Reading the owner's object: another user gets 404, staff see it as the owner does."""
    return signed_in(status, other=404)


def owners_object_changed(status, *, operator=403):
    """Changing the owner's object: staff need the model permission (a Viewer has none, an
    Operator those of accounts.0002/0003_roles, a superuser all)."""
    return owners_object(status) | {"viewer": 403, "operator": operator}


TASK = {"kind": "demo.noop", "payload": {"echo": 1}}
SCHEDULE = {"name": "every minute", "kind": "demo.noop", "interval_seconds": 60}
WEBHOOK = {"url": "http://127.0.0.1:9/hook", "events": ["task.succeeded"]}

API = {
    "auth:register": {
        "POST": (
            "/api/auth/register/",
            {"email": "new@example.com", "password": "a long passphrase 42"},
            {r: 201 for r in ROLES},
        )
    },
    "auth:token": {"POST": ("/api/auth/token/", "{credentials}", {r: 200 for r in ROLES})},
    "auth:token-refresh": {"POST": ("/api/auth/token/refresh/", "{refresh}", {r: 200 for r in ROLES})},
    # Only the owner of a refresh token may log it out; anyone else's is a 400 like a bad token.
    "auth:logout": {"POST": ("/api/auth/logout/", "{refresh}", signed_in(204, other=400, staff=400))},
    "auth:me": {
        "GET": ("/api/auth/me/", None, signed_in(200)),
        "PATCH": ("/api/auth/me/", {"full_name": "Renamed"}, signed_in(200)),
    },
    "auth:api-key-list": {
        "GET": ("/api/auth/api-keys/", None, signed_in(200)),
        "POST": ("/api/auth/api-keys/", {"name": "ci"}, signed_in(201)),
    },
    # API keys are personal: staff do not see other people's either.
    "auth:api-key-detail": {
        "GET": ("/api/auth/api-keys/{key}/", None, signed_in(200, other=404, staff=404)),
        "DELETE": ("/api/auth/api-keys/{key}/", None, signed_in(204, other=404, staff=404)),
    },
    "files:file-list": {
        "GET": ("/api/files/", None, signed_in(200)),
        "POST": ("/api/files/", "{upload}", signed_in(201)),
    },
    "files:file-presign": {
        "POST": ("/api/files/presign/", {"name": "a.csv", "size": 10, "content_type": "text/csv"}, signed_in(201))
    },
    "files:file-detail": {
        "GET": ("/api/files/{file}/", None, owners_object(200)),
        "DELETE": ("/api/files/{file}/", None, owners_object_changed(204)),
    },
    "files:file-complete": {"POST": ("/api/files/{file}/complete/", None, owners_object_changed(200))},
    "files:file-download": {"GET": ("/api/files/{file}/download/", None, owners_object(302))},
    "tasks:kinds": {"GET": ("/api/kinds/", None, signed_in(200))},
    "tasks:task-list": {
        "GET": ("/api/tasks/", None, signed_in(200)),
        "POST": ("/api/tasks/", TASK, signed_in(201)),
    },
    "tasks:task-bulk": {"POST": ("/api/tasks/bulk/", {"tasks": [TASK]}, signed_in(201))},
    "tasks:task-detail": {"GET": ("/api/tasks/{task}/", None, owners_object(200))},
    "tasks:task-events": {"GET": ("/api/tasks/{task}/events/", None, owners_object(200))},
    "tasks:task-events-stream": {"GET": ("/api/tasks/{task}/events/stream/", None, owners_object(200))},
    "tasks:task-events-stream-all": {"GET": ("/api/tasks/events/stream/", None, signed_in(200))},
    # Every task's counts: staff with tasks.view_task only (a collection: a 403 names no object).
    "tasks:task-counts-stream": {"GET": ("/api/tasks/counts/stream/", None, signed_in(403, staff=200))},
    "tasks:task-retry": {"POST": ("/api/tasks/{task}/retry/", {}, owners_object_changed(200, operator=200))},
    "tasks:task-cancel": {"POST": ("/api/tasks/{queued}/cancel/", {}, owners_object_changed(200, operator=200))},
    "tasks:schedule-list": {
        "GET": ("/api/schedules/", None, signed_in(200)),
        "POST": ("/api/schedules/", SCHEDULE, signed_in(201)),
    },
    "tasks:schedule-detail": {
        "GET": ("/api/schedules/{schedule}/", None, owners_object(200)),
        "PUT": ("/api/schedules/{schedule}/", SCHEDULE | {"name": "renamed"}, owners_object_changed(200)),
        "PATCH": ("/api/schedules/{schedule}/", {"enabled": False}, owners_object_changed(200)),
        "DELETE": ("/api/schedules/{schedule}/", None, owners_object_changed(204)),
    },
    "tasks:schedule-preview": {"GET": ("/api/schedules/{schedule}/preview/", None, owners_object(200))},
    "tasks:schedule-run": {"POST": ("/api/schedules/{schedule}/run/", None, owners_object_changed(201, operator=201))},
    "webhooks:callback-secret": {
        "GET": ("/api/webhooks/callback-secret/", None, signed_in(200)),
        "POST": ("/api/webhooks/callback-secret/", None, signed_in(200)),
    },
    "webhooks:endpoint-list": {
        "GET": ("/api/webhooks/", None, signed_in(200)),
        "POST": ("/api/webhooks/", WEBHOOK, signed_in(201)),
    },
    "webhooks:endpoint-detail": {
        "GET": ("/api/webhooks/{endpoint}/", None, owners_object(200)),
        "PATCH": ("/api/webhooks/{endpoint}/", {"description": "ci"}, owners_object_changed(200)),
        "DELETE": ("/api/webhooks/{endpoint}/", None, owners_object_changed(204)),
    },
    "webhooks:endpoint-deliveries": {"GET": ("/api/webhooks/{endpoint}/deliveries/", None, owners_object(200))},
    "webhooks:endpoint-rotate-secret": {
        "POST": ("/api/webhooks/{endpoint}/rotate-secret/", None, owners_object_changed(200))
    },
    "webhooks:delivery-list": {"GET": ("/api/webhook-deliveries/", None, signed_in(200))},
    "webhooks:delivery-detail": {"GET": ("/api/webhook-deliveries/{delivery}/", None, owners_object(200))},
    "webhooks:delivery-redeliver": {
        "POST": ("/api/webhook-deliveries/{delivery}/redeliver/", None, owners_object_changed(201))
    },
    "schema": {"GET": ("/api/schema/", None, ALL_OK)},
    "docs": {"GET": ("/api/docs/", None, ALL_OK)},
    # Outside /api/: the landing page, probes and metrics are open (the network keeps /metrics private).
    "home": {"GET": ("/", None, ALL_OK)},
    "healthz": {"GET": ("/healthz", None, ALL_OK)},
    "readyz": {"GET": ("/readyz", None, ALL_OK)},
    "metrics": {"GET": ("/metrics", None, ALL_OK)},
}

# Writes on the owner's objects that staff may make: (url name, method) → the audit action
# and the object it names. Made by the owner, none of them is audited (nor is any other row).
AUDITED = {
    ("files:file-detail", "DELETE"): ("file.delete", "file"),
    ("files:file-complete", "POST"): ("file.complete", "file"),
    ("tasks:task-retry", "POST"): ("task.retry", "task"),
    ("tasks:task-cancel", "POST"): ("task.cancel", "queued"),
    ("tasks:schedule-detail", "PUT"): ("schedule.change", "schedule"),
    ("tasks:schedule-detail", "PATCH"): ("schedule.change", "schedule"),
    ("tasks:schedule-detail", "DELETE"): ("schedule.delete", "schedule"),
    ("tasks:schedule-run", "POST"): ("schedule.run_now", "schedule"),
    ("webhooks:endpoint-detail", "PATCH"): ("webhook.change", "endpoint"),
    ("webhooks:endpoint-detail", "DELETE"): ("webhook.delete", "endpoint"),
    ("webhooks:endpoint-rotate-secret", "POST"): ("webhook.rotate_secret", "endpoint"),
    ("webhooks:delivery-redeliver", "POST"): ("delivery.redeliver", "delivery"),
}

# Lists: what another user must never see of the owner's objects.
LISTS_OF_OWNED = {
    "/api/tasks/": "task",
    "/api/files/": "file",
    "/api/schedules/": "schedule",
    "/api/webhooks/": "endpoint",
    "/api/webhook-deliveries/": "delivery",
    "/api/auth/api-keys/": "key",
}


# --- Walking the URL configuration ------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str
    methods: tuple[str, ...]
    admin: bool


def _methods(callback) -> tuple[str, ...]:
    actions = getattr(callback, "actions", None)
    if actions:  # a DRF viewset route: {method: action}, less what the viewset refuses
        allowed = callback.cls.http_method_names
        # DRF adds HEAD (as GET) to `actions` at the first request only: add it here already,
        # or the cells would depend on which tests ran earlier in the process.
        methods = {*actions, "head"} if "get" in actions else set(actions)
        return tuple(sorted(method.upper() for method in methods if method in allowed))
    view_class = getattr(callback, "view_class", None)
    if view_class is not None and hasattr(view_class, "http_method_names"):
        handlers = [m for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m)]
        return tuple(sorted(m.upper() for m in handlers))
    return ("GET",)


def walk(resolver=None, prefix="", namespace=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from walk(pattern, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            path = prefix + str(pattern.pattern)
            name = f"{namespace}{pattern.name}" if pattern.name else path
            yield Route(name=name, pattern=path, methods=_methods(pattern.callback), admin=path.startswith("admin/"))


def api_routes() -> list[Route]:
    return [route for route in walk() if not route.admin]


# --- The cast and their objects -----------------------------------------------------------------


@pytest.fixture
def owned(owner, s3_storage, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    failed = Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.FAILED, error="boom")
    TaskEvent.objects.create(task=failed, from_status="", to_status="queued", actor=owner, message="Submitted")
    queued = Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED)
    stored_file = stored_file_create(owner=owner, name="people.csv", content=b"a,b\n1,2\n", content_type="text/csv")
    schedule = schedule_create(
        owner=owner, spec=ScheduleSpec(name="nightly", kind="demo.noop", payload={}, interval_seconds=3600)
    )
    endpoint = WebhookEndpoint.objects.create(owner=owner, url="http://127.0.0.1:9/hook")
    delivery = WebhookDelivery.objects.create(
        owner=owner, endpoint=endpoint, task=failed, url=endpoint.url, event="task.failed", body={"id": "x"}
    )
    key, _ = api_key_create(user=owner, name="laptop")
    return {
        "task": failed.pk,
        "queued": queued.pk,
        "file": stored_file.pk,
        "schedule": schedule.pk,
        "endpoint": endpoint.pk,
        "delivery": delivery.pk,
        "key": key.pk,
    }


@pytest.fixture
def cast(owner, other_user, viewer, operator, superuser):
    """The user behind each API role."""
    return {"anonymous": None, "owner": owner, "other": other_user} | {
        "viewer": viewer,
        "operator": operator,
        "superuser": superuser,
    }


@pytest.fixture
def clients(cast):
    def client_of(user):
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
        return client

    return {role: client_of(user) for role, user in cast.items()}


OWNED_MODELS = {
    "task": Task,
    "queued": Task,
    "file": StoredFile,
    "schedule": Schedule,
    "endpoint": WebhookEndpoint,
    "delivery": WebhookDelivery,
    "key": ApiKey,
}

COUNTED_MODELS = (Task, TaskEvent, StoredFile, Schedule, WebhookEndpoint, WebhookDelivery, ApiKey, AuditEntry)


def _api_footprint(owned) -> tuple:
    """What a write could change: each of the owner's objects, and the rows writes add."""
    objects = {
        name: model_to_dict(found) if (found := model.objects.filter(pk=owned[name]).first()) else None
        for name, model in OWNED_MODELS.items()
    }
    counts = [model.objects.count() for model in COUNTED_MODELS]
    return objects, counts


def _request(client, method, path, body, *, owned, owner):
    path = path.format(**owned)
    if body == "{credentials}":
        body = {"email": owner.email, "password": "correct-horse-battery-staple-42"}
    elif body == "{refresh}":
        body = {"refresh": str(RefreshToken.for_user(owner))}
    elif body == "{upload}":
        upload = SimpleUploadedFile("hello.txt", b"hello", content_type="text/plain")
        return client.post(path, {"file": upload}, format="multipart")
    data = "" if body is None else json.dumps(body)  # no body (Django would send the text "None")
    response = client.generic(method, path, data=data, content_type="application/json")
    if response.streaming:  # a live event stream: its status is the answer; give its slot back
        close_streamed(response)
    return response


# --- The tests ------------------------------------------------------------------------------------


def with_head(routes) -> dict:
    """API, plus a HEAD row (GET's, without a body) for every route that answers HEAD."""
    table = {name: dict(methods) for name, methods in API.items()}
    for route in routes:
        if "HEAD" in route.methods and "GET" in table.get(route.name, {}):
            table[route.name].setdefault("HEAD", table[route.name]["GET"])
    return table


def test_every_endpoint_has_a_row():
    routes = api_routes()
    table = with_head(routes)
    missing = [f"{r.name} {m}" for r in routes for m in r.methods if m not in table.get(r.name, {})]
    assert missing == [], f"endpoints without a row in the authorization matrix: {missing}"
    unknown = [key for key in AUDITED if key[1] not in API.get(key[0], {})]
    assert unknown == [], f"audited writes without a row: {unknown}"
    known = {r.name for r in routes}
    stale = [name for name in API if name not in known]
    assert stale == [], f"rows for endpoints that no longer exist: {stale}"


def _audit_mismatches(entries, *, route, method, role, user, owned, owner) -> list[str]:
    """A staff member's write is audited once, naming the object and its owner; nothing else is."""
    audited = AUDITED.get((route, method))
    if role not in STAFF_ROLES or audited is None:
        return [f"{method} {route} as {role}: audited {[e.action for e in entries]}"] if entries else []
    action, name = audited
    found = [(e.user_id, e.action, e.object_ids, e.details) for e in entries]
    wanted = [(user.pk, action, [str(owned[name])], {"via": "api", "owner": owner.pk})]
    return [] if found == wanted else [f"{method} {route} as {role}: audited {found}, expected {wanted}"]


def test_every_api_endpoint_answers_each_role_as_the_matrix_says(clients, cast, owned, owner):
    mismatches, cells = [], 0
    for route, methods in with_head(api_routes()).items():
        for method, (path, body, expected) in methods.items():
            for role in ROLES:
                cells += 1
                refused = expected[role] >= 400
                # Each cell from the same starting data: a savepoint rolled back after it.
                with transaction.atomic():
                    before = _api_footprint(owned) if refused else None
                    last_audit = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
                    response = _request(clients[role], method, path, body, owned=owned, owner=owner)
                    entries = list(AuditEntry.objects.filter(pk__gt=last_audit))
                    changed = refused and _api_footprint(owned) != before
                    transaction.set_rollback(True)
                where = f"{method} {path} as {role}"
                if response.status_code != expected[role]:
                    mismatches.append(f"{where}: {response.status_code}, expected {expected[role]}")
                    continue
                if response.status_code == 403 and role == "other" and "{" in path:  # an object named
                    mismatches.append(f"{where} (another user): 403 confirms the object exists")
                if changed:
                    mismatches.append(f"{where}: refused ({response.status_code}), yet something changed")
                if response.status_code < 400:
                    mismatches += _audit_mismatches(
                        entries, route=route, method=method, role=role, user=cast[role], owned=owned, owner=owner
                    )
                elif entries:
                    mismatches.append(f"{where}: refused ({response.status_code}), yet audited")
    report.record_check("authorization_matrix_api", {"cells": cells, "mismatches": len(mismatches)})
    assert mismatches == [], "\n".join(mismatches)


def test_another_users_lists_hold_none_of_the_owners_objects(clients, owned):
    for path, kind in LISTS_OF_OWNED.items():
        response = clients["other"].get(path)
        assert response.status_code == 200
        assert str(owned[kind]) not in response.content.decode(), path


def test_another_users_ids_are_404_whether_or_not_they_exist(clients, owned):
    """The answer for someone else's id and for an id that exists nowhere is the same."""
    paths = {"task": "/api/tasks/{}/", "file": "/api/files/{}/", "schedule": "/api/schedules/{}/"}
    paths |= {"endpoint": "/api/webhooks/{}/", "delivery": "/api/webhook-deliveries/{}/"}
    for kind, path in paths.items():
        theirs = clients["other"].get(path.format(owned[kind]))
        nobody = clients["other"].get(path.format(uuid.uuid4()))
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json() == nobody.json()


# --- The admin matrix ------------------------------------------------------------------------
# What Viewers and Operators may look at (accounts.0002/0003/0005_roles). Neither may add,
# change or delete anything through the admin's model pages but OPERATOR_EDITABLE's, which
# Operators edit; their actions are the rows below.
VIEWABLE = {
    "tasks.task",
    "tasks.schedule",
    "tasks.concurrencylimit",
    "core.auditentry",
    "files.storedfile",
    "django_celery_results.taskresult",
    "webhooks.webhookendpoint",
    "webhooks.webhookdelivery",
}
OPERATOR_EDITABLE = {"tasks.concurrencylimit"}  # add, change, delete: Operators (Viewers look)
STAFF_ONLY = {  # superusers only
    "auth.group",
    "accounts.user",
    "accounts.apikey",
    "accounts.quota",
    "token_blacklist.outstandingtoken",
    "token_blacklist.blacklistedtoken",
    "django_celery_results.groupresult",
    "django_celery_beat.periodictask",
    "django_celery_beat.clockedschedule",
    "django_celery_beat.crontabschedule",
    "django_celery_beat.solarschedule",
    "django_celery_beat.intervalschedule",
}
LOGIN = 302  # anonymous and non-staff users are sent to the admin's login page


def admin_cells(anonymous, user, viewer, operator):
    return dict(zip(ADMIN_ROLES, (anonymous, user, viewer, operator), strict=True))


def standard_page(label: str, view: str) -> dict:
    if label in OPERATOR_EDITABLE and view in ("add", "delete"):
        return admin_cells(LOGIN, LOGIN, 403, 200)
    if view in ("changelist", "change", "history"):
        allowed = 200 if label in VIEWABLE else 403
        return admin_cells(LOGIN, LOGIN, allowed, allowed)
    if view == "redirect":  # <id>/ → <id>/change/
        return admin_cells(LOGIN, LOGIN, 302, 302)
    return admin_cells(LOGIN, LOGIN, 403, 403)  # add, delete


# Pages that are not one of a ModelAdmin's five: url name → (method, path, cells).
ADMIN_PAGES = {
    "admin:index": ("GET", "/admin/", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:login": ("GET", "/admin/login/", admin_cells(200, 200, 302, 302)),
    "admin:logout": ("GET", "/admin/logout/", admin_cells(LOGIN, LOGIN, 405, 405)),  # POST only
    "admin:password_change": ("GET", "/admin/password_change/", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:password_change_done": ("GET", "/admin/password_change/done/", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:autocomplete": ("GET", "/admin/autocomplete/", admin_cells(LOGIN, LOGIN, 403, 403)),  # no field named
    "admin:jsi18n": ("GET", "/admin/jsi18n/", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:view_on_site": ("GET", "/admin/r/{task_type}/{task}/", admin_cells(LOGIN, LOGIN, 404, 404)),
    "admin:app_list": ("GET", "/admin/tasks/", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:app_list (no permission)": ("GET", "/admin/auth/", admin_cells(LOGIN, LOGIN, 404, 404)),
    "admin/(?P<url>.*)$": ("GET", "/admin/no-such-page/", admin_cells(LOGIN, LOGIN, 404, 404)),
    "admin:auth_user_password_change": (
        "GET",
        "/admin/accounts/user/{user}/password/",
        admin_cells(LOGIN, LOGIN, 403, 403),
    ),
    "admin:tasks_dashboard": ("GET", "/admin/tasks/task/dashboard/", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:tasks_dashboard_workers": (
        "GET",
        "/admin/tasks/task/dashboard/workers/",
        admin_cells(LOGIN, LOGIN, 200, 200),
    ),
    "admin:tasks_task_owners": ("GET", "/admin/tasks/task/owners/?term=own", admin_cells(LOGIN, LOGIN, 200, 200)),
    "admin:tasks_task_retry_matching": (
        "GET",
        "/admin/tasks/task/retry-matching/",
        admin_cells(LOGIN, LOGIN, 403, 200),
    ),
    "admin:tasks_task_retry": ("POST", "/admin/tasks/task/{task}/retry/", admin_cells(LOGIN, LOGIN, 403, 302)),
    "admin:tasks_task_cancel": ("POST", "/admin/tasks/task/{queued}/cancel/", admin_cells(LOGIN, LOGIN, 403, 302)),
    "admin:tasks_task_revoke": ("POST", "/admin/tasks/task/{queued}/revoke/", admin_cells(LOGIN, LOGIN, 403, 302)),
    "admin:tasks_task_copy": ("GET", "/admin/tasks/task/{task}/copy/", admin_cells(LOGIN, LOGIN, 403, 200)),
}

# Bulk actions: (model, action) → cells. DONE: back to the list. REFUSED: a 403 (TaskAdmin
# refuses a forged action outright). IGNORED: Django's default for an action the user may
# not run, "No action selected" on the list (200), or a redirect to it (302) when the user
# may run some other action there. Refused or ignored, nothing changes (the test checks).
DONE, REFUSED, IGNORED, IGNORED_BACK_TO_LIST = 302, 403, 200, 302
ADMIN_ACTIONS = {
    ("tasks.task", "retry_selected"): admin_cells(LOGIN, LOGIN, REFUSED, DONE),
    ("tasks.task", "cancel_selected"): admin_cells(LOGIN, LOGIN, REFUSED, DONE),
    ("tasks.schedule", "run_now"): admin_cells(LOGIN, LOGIN, IGNORED, DONE),
    ("tasks.schedule", "pause"): admin_cells(LOGIN, LOGIN, IGNORED, DONE),
    ("tasks.schedule", "resume"): admin_cells(LOGIN, LOGIN, IGNORED, DONE),
    ("django_celery_results.taskresult", "retry_results"): admin_cells(LOGIN, LOGIN, IGNORED, DONE),
    ("webhooks.webhookdelivery", "redeliver"): admin_cells(LOGIN, LOGIN, IGNORED, IGNORED),
    ("accounts.user", "revoke_all_api_keys"): admin_cells(LOGIN, LOGIN, REFUSED, REFUSED),
    ("accounts.apikey", "revoke_keys"): admin_cells(LOGIN, LOGIN, REFUSED, REFUSED),
    **{
        ("django_celery_beat.periodictask", action): admin_cells(LOGIN, LOGIN, REFUSED, REFUSED)
        for action in ("enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks")
    },
}
# delete_selected, offered wherever a superuser may delete: nobody else may.
DELETE_SELECTED = "delete_selected"


# Models where Operators have actions of their own (so a forged delete_selected redirects).
OPERATOR_ACTIONS = {"tasks.schedule", "django_celery_results.taskresult"}


def delete_selected(label: str) -> dict:
    if label in OPERATOR_EDITABLE:
        return admin_cells(LOGIN, LOGIN, IGNORED, DONE)
    if label not in VIEWABLE:
        return admin_cells(LOGIN, LOGIN, REFUSED, REFUSED)
    operator = IGNORED_BACK_TO_LIST if label in OPERATOR_ACTIONS else IGNORED
    return admin_cells(LOGIN, LOGIN, IGNORED, operator)


@pytest.fixture(autouse=True)
def quiet_request_log():
    """Django logs every 403 and 404 with a traceback, which the console format renders at
    length: hundreds of them would cost minutes. The statuses are what is under test."""
    import logging

    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _model_admin_routes():
    """(url name, model label, view) for the five pages of every registered ModelAdmin."""
    for model in admin.site._registry:
        opts = model._meta
        prefix = f"admin:{opts.app_label}_{opts.model_name}"
        for view in ("changelist", "add", "history", "delete", "change"):
            yield f"{prefix}_{view}", opts.label_lower, view
        yield f"admin/{opts.app_label}/{opts.model_name}/<path:object_id>/", opts.label_lower, "redirect"


def _admin_actions():
    """Every bulk action of every ModelAdmin, as a superuser sees them."""
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_staff=True, is_superuser=True, is_active=True)
    for model, model_admin in admin.site._registry.items():
        for name in model_admin.get_actions(request):
            yield model._meta.label_lower, name


@pytest.fixture
def admin_objects(owner, owned):
    """One object of every model the admin shows (a new ModelAdmin needs a line here)."""
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType
    from django.utils import timezone
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )
    from django_celery_results.models import GroupResult, TaskResult
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    from apps.accounts.models import ApiKey, Quota
    from apps.core.models import AuditEntry
    from apps.files.models import StoredFile
    from apps.tasks.models import ConcurrencyLimit, Schedule

    RefreshToken.for_user(owner)
    outstanding = OutstandingToken.objects.first()
    objects = {
        "auth.group": Group.objects.create(name="Somebody's group"),
        "accounts.user": owner,
        "accounts.apikey": ApiKey.objects.get(pk=owned["key"]),
        "accounts.quota": Quota.objects.create(user=owner, tasks_not_final=100),
        "token_blacklist.outstandingtoken": outstanding,
        "token_blacklist.blacklistedtoken": BlacklistedToken.objects.create(token=outstanding),
        "django_celery_results.groupresult": GroupResult.objects.create(group_id="group-1"),
        "django_celery_results.taskresult": TaskResult.objects.create(
            task_id=str(uuid.uuid4()),
            status="SUCCESS",
            task_name="taskflow.reap_stale_tasks",
            task_args="[]",
            task_kwargs="{}",
        ),
        "django_celery_beat.periodictask": PeriodicTask.objects.first(),
        "django_celery_beat.clockedschedule": ClockedSchedule.objects.create(clocked_time=timezone.now()),
        "django_celery_beat.crontabschedule": CrontabSchedule.objects.create(),
        "django_celery_beat.solarschedule": SolarSchedule.objects.create(event="sunrise", latitude=0, longitude=0),
        "django_celery_beat.intervalschedule": IntervalSchedule.objects.first(),
        "core.auditentry": AuditEntry.objects.create(user=owner, action="task.retry", object_type="tasks.task"),
        "tasks.task": Task.objects.get(pk=owned["task"]),
        "tasks.schedule": Schedule.objects.get(pk=owned["schedule"]),
        "tasks.concurrencylimit": ConcurrencyLimit.objects.create(scope="kind", kind="demo.noop", limit=2),
        "files.storedfile": StoredFile.objects.get(pk=owned["file"]),
        "webhooks.webhookendpoint": WebhookEndpoint.objects.get(pk=owned["endpoint"]),
        "webhooks.webhookdelivery": WebhookDelivery.objects.get(pk=owned["delivery"]),
    }
    objects["ids"] = owned | {"user": owner.pk, "task_type": ContentType.objects.get_for_model(Task).pk}
    return objects


@pytest.fixture
def admin_clients(other_user, viewer, operator):
    from django.test import Client

    clients = {"anonymous": Client()}
    for role, user in (("user", other_user), ("viewer", viewer), ("operator", operator)):
        clients[role] = Client()
        clients[role].force_login(user)
    return clients


def test_every_admin_page_and_action_has_a_row():
    covered = {name for name, _, _ in _model_admin_routes()} | set(ADMIN_PAGES)
    missing = [route.name for route in walk() if route.admin and route.name not in covered]
    assert missing == [], f"admin pages without a row in the authorization matrix: {missing}"
    unknown_models = {label for _, label, _ in _model_admin_routes()} - VIEWABLE - STAFF_ONLY
    assert unknown_models == set(), f"admin models neither VIEWABLE nor STAFF_ONLY: {unknown_models}"
    actions = [key for key in _admin_actions() if key[1] != DELETE_SELECTED and key not in ADMIN_ACTIONS]
    assert actions == [], f"admin actions without a row: {actions}"


def _admin_cell(client, method, path):
    with transaction.atomic():
        response = client.get(path) if method == "GET" else client.post(path, {"reason": "matrix"})
        transaction.set_rollback(True)
    return response.status_code


def test_every_admin_page_answers_each_role_as_the_matrix_says(admin_clients, admin_objects):
    ids = admin_objects["ids"]
    mismatches, cells = [], 0
    rows = [(name, "GET", None, label, view) for name, label, view in _model_admin_routes()]
    rows += [(name, method, path, None, None) for name, (method, path, _) in ADMIN_PAGES.items()]
    for name, method, path, label, view in rows:
        if path is None:
            app_label, model_name = label.split(".")
            base = f"/admin/{app_label}/{model_name}/"
            pk = admin_objects[label].pk
            path = {"changelist": base, "add": f"{base}add/", "redirect": f"{base}{pk}/"}.get(
                view, f"{base}{pk}/{view}/"
            )
            expected = standard_page(label, view)
        else:
            path, expected = path.format(**ids), ADMIN_PAGES[name][2]
        for role in ADMIN_ROLES:
            cells += 1
            status = _admin_cell(admin_clients[role], method, path)
            if status != expected[role]:
                mismatches.append(f"{method} {path} as {role}: {status}, expected {expected[role]}")
    report.record_check("authorization_matrix_admin_pages", {"cells": cells, "mismatches": len(mismatches)})
    assert mismatches == [], "\n".join(mismatches)


def _footprint(model, obj) -> tuple:
    """What an action could have changed: the object, its table, tasks, deliveries, the audit trail."""
    from django.forms.models import model_to_dict

    from apps.core.models import AuditEntry

    current = model.objects.filter(pk=obj.pk).first()
    return (
        model_to_dict(current) if current else None,
        model.objects.count(),
        Task.objects.count(),
        WebhookDelivery.objects.count(),
        AuditEntry.objects.count(),
    )


def test_every_admin_action_is_refused_or_done_as_the_matrix_says(admin_clients, admin_objects):
    from django.apps import apps as django_apps

    mismatches, cells = [], 0
    for label, action in sorted(set(_admin_actions())):
        model = django_apps.get_model(label)
        expected = delete_selected(label) if action == DELETE_SELECTED else ADMIN_ACTIONS[(label, action)]
        app_label, model_name = label.split(".")
        obj = admin_objects[label]
        for role in ADMIN_ROLES:
            cells += 1
            with transaction.atomic():
                before = _footprint(model, obj)
                response = admin_clients[role].post(
                    f"/admin/{app_label}/{model_name}/",
                    {"action": action, "_selected_action": [obj.pk], "index": "0", "post": "yes", "reason": "matrix"},
                )
                changed = _footprint(model, obj) != before
                transaction.set_rollback(True)
            if response.status_code != expected[role]:
                mismatches.append(f"{action} on {label} as {role}: {response.status_code}, expected {expected[role]}")
            if changed and expected[role] != DONE:
                mismatches.append(f"{action} on {label} as {role} was not done, yet something changed")
    report.record_check("authorization_matrix_admin_actions", {"cells": cells, "mismatches": len(mismatches)})
    assert mismatches == [], "\n".join(mismatches)
