"""Abuse and bad input: each gets a clear 4xx with the JSON error shape, and nothing half written."""

import json
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.core import throttling
from apps.files.models import StoredFile
from apps.tasks.models import Task, TaskEvent

pytestmark = pytest.mark.django_db

TASKS = "/api/tasks/"
FILES = "/api/files/"


def assert_json_error(response, status, code=None):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


def nothing_written():
    return Task.objects.count() == 0 and TaskEvent.objects.count() == 0 and StoredFile.objects.count() == 0


@pytest.fixture
def local_files(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def test_a_json_body_over_the_request_limit_is_a_413(owner_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    body = json.dumps({"kind": "demo.noop", "payload": {"echo": "x" * 100_000}})
    response = owner_api.post(TASKS, body, content_type="application/json")
    assert_json_error(response, 413)
    assert nothing_written()


def test_a_payload_over_the_task_limit_is_a_413(owner_api):
    response = owner_api.post(TASKS, {"kind": "demo.noop", "payload": {"echo": "x" * 300_000}}, format="json")
    assert_json_error(response, 413, "payload_too_large")
    assert nothing_written()


def test_deeply_nested_json_is_a_400(owner_api):
    nested = "[" * 100_000 + "]" * 100_000
    body = '{"kind": "demo.noop", "payload": {"echo": ' + nested + "}}"
    response = owner_api.post(TASKS, body, content_type="application/json")
    assert_json_error(response, 400)
    assert nothing_written()


def test_json_nested_past_the_limit_is_a_400(owner_api):
    nested = "[" * 101 + "]" * 101
    body = '{"kind": "demo.noop", "payload": {"echo": ' + nested + "}}"
    assert_json_error(owner_api.post(TASKS, body, content_type="application/json"), 400, "parse_error")


def test_nesting_within_reason_is_accepted(owner_api):
    nested = json.loads("[" * 90 + "]" * 90)
    response = owner_api.post(TASKS, {"kind": "demo.noop", "payload": {"echo": nested}}, format="json")
    assert response.status_code == 201


def test_a_bulk_submission_over_the_maximum_is_a_400_and_writes_nothing(owner_api):
    tasks = [{"kind": "demo.noop"}] * 1001
    response = owner_api.post(f"{TASKS}bulk/", {"tasks": tasks}, format="json")
    assert_json_error(response, 400, "invalid")
    assert nothing_written()


def test_one_bad_item_in_a_bulk_submission_writes_nothing(owner_api):
    tasks = [{"kind": "demo.noop"}] * 50 + [{"kind": "demo.sleep", "payload": {"seconds": -1}}]
    response = owner_api.post(f"{TASKS}bulk/", {"tasks": tasks}, format="json")
    error = assert_json_error(response, 400, "invalid")
    assert "50" in error["fields"]["tasks"]
    assert nothing_written()


@pytest.mark.parametrize(
    "body",
    [b'{"kind": "demo.noop", "title": "\xff\xfe"}', b"\xc3\x28", b'{"kind": "demo.noop"', b"\x00" * 10],
)
def test_invalid_utf8_or_broken_json_is_a_400(owner_api, body):
    response = owner_api.generic("POST", TASKS, body, content_type="application/json")
    assert_json_error(response, 400, "parse_error")
    assert nothing_written()


def test_thousands_of_form_fields_are_a_400(owner_api, local_files):
    fields = {f"field{n}": "x" for n in range(5000)}
    response = owner_api.post(FILES, fields, format="multipart")
    assert_json_error(response, 400)
    assert nothing_written()


def test_hundreds_of_file_parts_are_a_400(owner_api, local_files):
    files = {f"file{n}": SimpleUploadedFile(f"{n}.txt", b"x") for n in range(500)}
    response = owner_api.post(FILES, files, format="multipart")
    assert_json_error(response, 400)
    assert nothing_written()
    assert list(local_files.rglob("*.txt")) == []


def test_an_upload_over_the_limit_is_a_413_and_leaves_nothing(owner_api, local_files, settings):
    settings.FILES_MAX_UPLOAD_BYTES = 1024
    upload = SimpleUploadedFile("big.bin", b"x" * 4096, content_type="application/octet-stream")
    response = owner_api.post(FILES, {"file": upload}, format="multipart")
    assert_json_error(response, 413, "payload_too_large")
    assert nothing_written()
    assert [p for p in local_files.rglob("*") if p.is_file()] == []


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(owner_api, local_files, settings):
    settings.FILES_MAX_UPLOAD_BYTES = 1024
    response = owner_api.generic(
        "POST", FILES, b"--b\r\n", content_type="multipart/form-data; boundary=b", CONTENT_LENGTH=str(10**9)
    )
    assert_json_error(response, 413, "payload_too_large")


def test_a_path_like_file_name_is_stored_under_its_last_part_only(owner_api, local_files):
    upload = SimpleUploadedFile("../../etc/passwd", b"root:x:0:0", content_type="text/plain")
    response = owner_api.post(FILES, {"file": upload}, format="multipart")
    assert response.status_code == 201
    stored = StoredFile.objects.get()
    assert stored.file.name.endswith("/passwd")
    assert ".." not in stored.file.name
    path = local_files / stored.file.name
    assert path.resolve().is_relative_to(local_files.resolve())


def test_an_uploaded_html_page_downloads_as_an_attachment_that_is_never_sniffed(owner_api, local_files):
    page = SimpleUploadedFile("page.html", b"<script>alert(document.cookie)</script>", content_type="text/html")
    file_id = owner_api.post(FILES, {"file": page}, format="multipart").json()["id"]
    response = owner_api.get(f"{FILES}{file_id}/download/")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"


def test_a_refresh_token_cannot_be_used_again_after_rotation(api, owner):
    tokens = api.post("/api/auth/token/", {"email": owner.email, "password": "correct-horse-battery-staple-42"})
    old_refresh = tokens.json()["refresh"]
    assert api.post("/api/auth/token/refresh/", {"refresh": old_refresh}).status_code == 200
    again = api.post("/api/auth/token/refresh/", {"refresh": old_refresh})
    assert_json_error(again, 401)


def test_a_forged_token_is_refused(api):
    response = APIClient().get(TASKS, HTTP_AUTHORIZATION="Bearer eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoxfQ.")
    assert_json_error(response, 401)


def test_brute_force_on_token_is_throttled_with_retry_after(api, owner, settings, monkeypatch):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth": "5/min"}
    monkeypatch.setattr(throttling, "KEY_PREFIX", f"test-ratelimit:{uuid.uuid4().hex}")
    statuses = [
        api.post("/api/auth/token/", {"email": owner.email, "password": f"guess-{n}"}).status_code for n in range(5)
    ]
    assert statuses == [401] * 5
    blocked = api.post("/api/auth/token/", {"email": owner.email, "password": "correct-horse-battery-staple-42"})
    assert_json_error(blocked, 429)
    assert int(blocked["Retry-After"]) >= 1
