"""The API's contract (issue 14): strict input, one owner representation, absolute links, and
paths that answer without their trailing slash — never with an HTML redirect."""

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from apps.accounts.models import ApiKey, User
from apps.files.models import StoredFile
from apps.files.services import stored_file_create
from apps.tasks.models import Schedule, Task, TaskStatus
from apps.tasks.schedule_services import ScheduleSpec, schedule_create
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

TASKS = "/api/tasks/"
PASSWORD = "a long passphrase 42"


@pytest.fixture(autouse=True)
def local_files(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def owned(owner):
    failed = Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.FAILED, error="boom")
    queued = Task.objects.create(owner=owner, kind="demo.noop", status=TaskStatus.QUEUED)
    stored_file = stored_file_create(owner=owner, name="people.csv", content=b"a,b\n1,2\n", content_type="text/csv")
    schedule = schedule_create(
        owner=owner, spec=ScheduleSpec(name="nightly", kind="demo.noop", payload={}, interval_seconds=3600)
    )
    endpoint = WebhookEndpoint.objects.create(owner=owner, url="http://127.0.0.1:9/hook")
    delivery = WebhookDelivery.objects.create(
        owner=owner, endpoint=endpoint, task=failed, url=endpoint.url, event="task.failed", body={"id": "x"}
    )
    return {
        "task": failed,
        "queued": queued,
        "file": stored_file,
        "schedule": schedule,
        "endpoint": endpoint,
        "delivery": delivery,
    }


def fields_of(response) -> dict:
    assert response.status_code == 400, response.content
    return response.json()["error"]["fields"]


# --- Unknown fields -------------------------------------------------------------------------------


def test_a_misspelt_top_level_field_is_a_400_naming_it_and_nothing_is_written(owner_api):
    response = owner_api.post(TASKS, {"kind": "demo.noop", "priorty": "high"}, format="json")
    fields = fields_of(response)
    assert list(fields) == ["priorty"]
    assert fields["priorty"][0].startswith("Unknown field.")
    assert "priority" in fields["priorty"][0]  # the message lists what is accepted
    assert response.json()["error"]["message"].startswith("priorty: Unknown field.")
    assert not Task.objects.exists()


def test_unknown_fields_are_reported_with_the_other_errors_of_the_body(owner_api):
    fields = fields_of(owner_api.post(TASKS, {"kind": "demo.noop", "priority": "urgent", "colour": 1}, format="json"))
    assert set(fields) == {"priority", "colour"}


def test_a_read_only_field_sent_by_a_client_is_a_400(owner_api, owner):
    refresh = RefreshToken.for_user(owner)
    response = APIClient().post(
        "/api/auth/token/refresh/", {"refresh": str(refresh), "access": "forged"}, format="json"
    )
    assert fields_of(response) == {"access": ["Read-only field: it cannot be set."]}


def test_an_unknown_payload_key_is_a_400_naming_it_and_nothing_is_written(owner_api):
    response = owner_api.post(TASKS, {"kind": "demo.fail", "payload": {"times": 5}}, format="json")
    fields = fields_of(response)
    assert list(fields) == ["payload"] and list(fields["payload"]) == ["times"]
    assert fields["payload"]["times"][0].startswith("Unknown field.")
    assert "failures" in fields["payload"]["times"][0]
    assert not Task.objects.exists()


def test_a_kind_that_takes_extra_keys_keeps_them_in_the_payload(owner_api):
    response = owner_api.post(TASKS, {"kind": "demo.noop", "payload": {"echo": 1, "batch": 7}}, format="json")
    assert response.status_code == 201, response.json()
    assert Task.objects.get().payload == {"echo": 1, "batch": 7}


def test_kinds_show_whether_their_payload_takes_extra_keys(owner_api):
    cache.delete_many(["tasks:kinds:user", "tasks:kinds:staff"])  # an earlier run's answer
    kinds = {kind["name"]: kind["payload_schema"] for kind in owner_api.get("/api/kinds/").json()}
    assert kinds["demo.fail"]["additionalProperties"] is False
    assert kinds["files.checksum"]["additionalProperties"] is False
    assert kinds["demo.noop"]["additionalProperties"] is True


def test_a_bulk_item_with_an_unknown_field_is_a_400_naming_the_item_and_nothing_is_written(owner_api):
    items = [{"kind": "demo.noop"}, {"kind": "demo.noop", "priorty": "high"}]
    fields = fields_of(owner_api.post(f"{TASKS}bulk/", {"tasks": items}, format="json"))
    assert list(fields["tasks"]) == ["1"] and list(fields["tasks"]["1"]) == ["priorty"]
    items = [{"kind": "demo.noop"}, {"kind": "demo.fail", "payload": {"x": 1}}]
    fields = fields_of(owner_api.post(f"{TASKS}bulk/", {"tasks": items}, format="json"))
    assert list(fields["tasks"]) == ["1"] and list(fields["tasks"]["1"]["payload"]) == ["x"]
    assert not Task.objects.exists()


def test_a_schedule_with_an_unknown_field_or_payload_key_is_a_400_and_nothing_is_written(owner_api):
    schedule = {"name": "nightly", "kind": "demo.fail", "interval_seconds": 60}
    assert list(fields_of(owner_api.post("/api/schedules/", schedule | {"cronn": "* * * * *"}, format="json"))) == [
        "cronn"
    ]
    fields = fields_of(owner_api.post("/api/schedules/", schedule | {"payload": {"times": 2}}, format="json"))
    assert list(fields["payload"]) == ["times"]
    assert not Schedule.objects.exists()


def test_a_schedule_patch_with_an_unknown_field_changes_nothing(owner_api, owned):
    schedule = owned["schedule"]
    response = owner_api.patch(f"/api/schedules/{schedule.pk}/", {"enabled": False, "paused": True}, format="json")
    assert list(fields_of(response)) == ["paused"]
    schedule.refresh_from_db()
    assert schedule.enabled is True


def _input_endpoints(owned, owner) -> list[tuple[str, str, dict]]:
    refresh = str(RefreshToken.for_user(owner))
    schedule = f"/api/schedules/{owned['schedule'].pk}/"
    return [
        ("post", "/api/auth/register/", {"email": "new@example.com", "password": PASSWORD}),
        ("post", "/api/auth/token/", {"email": owner.email, "password": PASSWORD}),
        ("post", "/api/auth/token/refresh/", {"refresh": refresh}),
        ("post", "/api/auth/logout/", {"refresh": refresh}),
        ("patch", "/api/auth/me/", {"full_name": "Renamed"}),
        ("post", "/api/auth/api-keys/", {"name": "ci"}),
        ("post", "/api/files/presign/", {"name": "a.csv", "size": 10, "content_type": "text/csv"}),
        ("post", TASKS, {"kind": "demo.noop"}),
        ("post", f"{TASKS}bulk/", {"tasks": [{"kind": "demo.noop"}]}),
        ("post", f"{TASKS}{owned['task'].pk}/retry/", {"reason": "again"}),
        ("post", f"{TASKS}{owned['queued'].pk}/cancel/", {"reason": "stop"}),
        ("post", "/api/schedules/", {"name": "hourly", "kind": "demo.noop", "interval_seconds": 3600}),
        ("put", schedule, {"name": "renamed", "kind": "demo.noop", "interval_seconds": 60}),
        ("patch", schedule, {"enabled": False}),
        ("post", "/api/webhooks/", {"url": "http://127.0.0.1:9/hook"}),
        ("patch", f"/api/webhooks/{owned['endpoint'].pk}/", {"description": "ci"}),
        # Actions whose body carries at most a reason (or nothing) refuse anything else too.
        ("post", f"{schedule}run/", {"reason": "now"}),
        ("post", f"/api/webhooks/{owned['endpoint'].pk}/rotate-secret/", {}),
        ("post", f"/api/webhook-deliveries/{owned['delivery'].pk}/redeliver/", {}),
        ("post", f"/api/files/{owned['file'].pk}/complete/", {}),
        ("post", "/api/webhooks/callback-secret/", {}),
    ]


def test_every_input_endpoint_refuses_an_unknown_field_and_writes_nothing(owner, owned):
    owner.set_password(PASSWORD)
    owner.save()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(owner).access_token}")
    before = (
        Task.objects.count(),
        Schedule.objects.count(),
        WebhookEndpoint.objects.count(),
        WebhookDelivery.objects.count(),
        ApiKey.objects.count(),
    )
    for method, path, body in _input_endpoints(owned, owner):
        response = getattr(api, method)(path, body | {"bogus": 1}, format="json")
        assert response.status_code == 400, (method, path, response.content)
        assert list(response.json()["error"]["fields"]) == ["bogus"], (method, path)
    after = (
        Task.objects.count(),
        Schedule.objects.count(),
        WebhookEndpoint.objects.count(),
        WebhookDelivery.objects.count(),
        ApiKey.objects.count(),
    )
    assert after == before
    assert not User.objects.filter(email="new@example.com").exists()
    owner.refresh_from_db()
    assert owner.full_name == "Olivia Owner"
    owned["task"].refresh_from_db()
    owned["queued"].refresh_from_db()
    assert (owned["task"].status, owned["queued"].status) == (TaskStatus.FAILED, TaskStatus.QUEUED)


def test_a_multipart_upload_with_an_unknown_part_is_a_400_and_stores_nothing(owner_api):
    body = {"file": SimpleUploadedFile("a.csv", b"a,b\n"), "folder": "x"}
    assert list(fields_of(owner_api.post("/api/files/", body, format="multipart"))) == ["folder"]
    assert not StoredFile.objects.exists()


# --- Trailing slashes -----------------------------------------------------------------------------


def test_a_post_without_the_trailing_slash_creates_the_task(owner_api, owner):
    response = owner_api.post("/api/tasks", {"kind": "demo.noop"}, format="json")
    assert response.status_code == 201, response.content
    task = Task.objects.get(owner=owner)
    assert response["Location"] == f"http://testserver/api/tasks/{task.pk}/"
    assert owner_api.get(f"/api/tasks/{task.pk}").json()["id"] == str(task.pk)


def test_every_method_answers_without_the_trailing_slash(owner_api, owned):
    schedule = owned["schedule"]
    assert owner_api.patch(f"/api/schedules/{schedule.pk}", {"enabled": False}, format="json").status_code == 200
    assert owner_api.post(f"/api/tasks/{owned['task'].pk}/retry", {}, format="json").status_code == 200
    assert owner_api.delete(f"/api/webhooks/{owned['endpoint'].pk}").status_code == 204
    schedule.refresh_from_db()
    assert schedule.enabled is False
    assert not WebhookEndpoint.objects.filter(pk=owned["endpoint"].pk).exists()


def test_auth_answers_without_the_trailing_slash(owner):
    owner.set_password(PASSWORD)
    owner.save()
    response = APIClient().post("/api/auth/token", {"email": owner.email, "password": PASSWORD}, format="json")
    assert response.status_code == 200 and "access" in response.json()


def test_the_asgi_entry_point_answers_without_the_trailing_slash_too():
    response = async_to_sync(AsyncClient().get)("/api/kinds")
    assert response.status_code == 401  # resolved and refused, not redirected
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_slash_form_stays_canonical_and_unknown_paths_stay_a_json_404(owner_api):
    assert owner_api.get("/api/kinds").status_code == 200  # served, not redirected
    assert reverse("tasks:task-list") == "/api/tasks/"
    assert reverse("auth:token") == "/api/auth/token/"
    for path in ("/api/nope", "/api/nope/", "/api/tasks/not-a-task/nope", "/api/schema/x"):
        for response in (owner_api.get(path), owner_api.post(path, {}, format="json")):
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"


# --- One owner, absolute links --------------------------------------------------------------------


def test_owner_is_the_owners_email_on_every_resource(owner_api, owner, owned):
    shown = {
        "task": owner_api.get(f"{TASKS}{owned['task'].pk}/").json()["owner"],
        "task list": owner_api.get(TASKS).json()["results"][0]["owner"],
        "file": owner_api.get(f"/api/files/{owned['file'].pk}/").json()["owner"],
        "schedule": owner_api.get(f"/api/schedules/{owned['schedule'].pk}/").json()["owner"],
        "webhook": owner_api.get(f"/api/webhooks/{owned['endpoint'].pk}/").json()["owner"],
        "delivery": owner_api.get(f"/api/webhook-deliveries/{owned['delivery'].pk}/").json()["owner"],
    }
    assert shown == dict.fromkeys(shown, owner.email)


def test_links_and_location_headers_are_absolute(owner_api, owned):
    base = "http://testserver/api"
    submitted = owner_api.post(TASKS, {"kind": "demo.noop"}, format="json")
    assert submitted["Location"] == submitted.json()["url"] == f"{base}/tasks/{submitted.json()['id']}/"
    listed = owner_api.get(TASKS, {"page_size": 1}).json()
    assert listed["results"][0]["url"].startswith(f"{base}/tasks/")
    assert listed["next"].startswith(f"{base}/tasks/?")
    task = owned["task"]
    task.file_links.create(file=owned["file"], role="input")
    detail = owner_api.get(f"{TASKS}{task.pk}/").json()
    assert detail["files"][0]["download_url"] == f"{base}/files/{owned['file'].pk}/download/"
    assert owner_api.get(f"/api/files/{owned['file'].pk}/").json()["download_url"] == detail["files"][0]["download_url"]

    run = owner_api.post(f"/api/schedules/{owned['schedule'].pk}/run/")
    assert run.status_code == 201
    assert run["Location"] == run.json()["url"] == f"{base}/tasks/{run.json()['id']}/"
    schedule = owner_api.get(f"/api/schedules/{owned['schedule'].pk}/").json()
    assert schedule["last_run"]["url"] == run.json()["url"]
    for action in ("retry", "cancel"):
        target = owned["task"] if action == "retry" else owned["queued"]
        assert owner_api.post(f"{TASKS}{target.pk}/{action}/", {}, format="json").json()["url"].startswith(base)


def test_the_presign_answer_links_to_its_complete_call(s3_storage, owner_api):
    response = owner_api.post("/api/files/presign/", {"name": "a.csv", "size": 4, "content_type": "text/csv"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["complete_url"] == f"http://testserver/api/files/{body['file']['id']}/complete/"
    assert body["file"]["owner"] == "owner@example.com"
