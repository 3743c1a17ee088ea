"""Files as task inputs and outputs: the file kinds, end to end and in the executor."""

import csv
import hashlib
import io
import json

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from apps.files import services
from apps.files.models import StoredFile
from apps.tasks import executor
from apps.tasks.models import Task, TaskFile
from tests.support.processes import Worker, wait_for

CSV = b"city,population,mayor\nBerlin,3850809,Wegner\nHamburg,1945532,\nMunich,1512491,Reiter\nBerlin,3850809,Wegner\n"


def upload(client, name="cities.csv", content=CSV, content_type="text/csv") -> str:
    response = client.post(
        "/api/files/", {"file": SimpleUploadedFile(name, content, content_type=content_type)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def submit(client, kind, payload):
    return client.post("/api/tasks/", {"kind": kind, "payload": payload}, format="json")


def run_in_process(task_id) -> Task:
    """What the worker does for one message, run here: claim, run the kind, record the outcome."""
    executor.execute(task_id, worker="test-process")
    return Task.objects.get(pk=task_id)


def download(client, file_id) -> bytes:
    response = client.get(f"/api/files/{file_id}/download/")
    if response.status_code == 302:  # S3: a presigned URL on the moto server
        fetched = requests.get(response["Location"], timeout=10)
        assert fetched.status_code == 200
        return fetched.content
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def check_report(client, task: Task) -> None:
    assert task.status == "succeeded", task.error
    assert task.result["rows"] == 4
    assert task.result["columns"] == ["city", "population", "mayor"]
    report = json.loads(download(client, task.result["report_file"]))
    population = report["columns"][1]
    assert (population["count"], population["nulls"], population["numeric"]) == (4, 0, True)
    assert (population["min"], population["max"]) == (1512491, 3850809)
    assert population["mean"] == pytest.approx((3850809 * 2 + 1945532 + 1512491) / 4)
    city = report["columns"][0]
    assert city["top_values"][0] == {"value": "Berlin", "count": 2}
    assert report["columns"][2]["nulls"] == 1 and report["columns"][2]["numeric"] is False
    summary = list(csv.DictReader(io.StringIO(download(client, task.result["summary_file"]).decode())))
    assert [row["column"] for row in summary] == ["city", "population", "mayor"]
    assert summary[0]["top_values"].startswith("Berlin (2)")

    detail = client.get(f"/api/tasks/{task.pk}/").json()
    roles = sorted((f["role"], f["name"]) for f in detail["files"])
    assert roles == [("input", "cities.csv"), ("output", "cities.report.json"), ("output", "cities.summary.csv")]
    assert all(f["download_url"].endswith("/download/") for f in detail["files"])
    outputs = StoredFile.objects.filter(task_links__role="output", task_links__task=task)
    assert {f.owner_id for f in outputs} == {task.owner_id}
    assert all(f.state == "ready" and len(f.sha256) == 64 for f in outputs)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_csv_report_runs_end_to_end_on_s3_through_a_real_worker(owner_api, s3_storage, worker_env):
    worker = Worker(worker_env | s3_storage.env, name="files-s3").start()
    try:
        file_id = upload(owner_api)
        response = submit(owner_api, "files.csv_report", {"file": file_id})
        assert response.status_code == 201, response.content
        task = Task.objects.get(pk=response.json()["id"])
        wait_for(lambda: Task.objects.get(pk=task.pk).is_final, timeout=30, message="the report")
        check_report(owner_api, Task.objects.get(pk=task.pk))
        assert len(s3_storage.object_keys()) == 3
    finally:
        worker.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_csv_report_runs_end_to_end_on_local_storage_through_a_real_worker(
    owner_api, worker_env, local_storage, tmp_path
):
    # The worker's media folder is TASKFLOW_VAR_DIR/media: the same folder as this test's.
    worker = Worker(worker_env | {"TASKFLOW_VAR_DIR": str(tmp_path)}, name="files-local").start()
    try:
        file_id = upload(owner_api)
        task_id = submit(owner_api, "files.csv_report", {"file": file_id}).json()["id"]
        wait_for(lambda: Task.objects.get(pk=task_id).is_final, timeout=30, message="the report")
        check_report(owner_api, Task.objects.get(pk=task_id))
    finally:
        worker.stop()


@pytest.mark.django_db
def test_a_malformed_csv_fails_with_a_readable_error_naming_the_line(owner_api):
    file_id = upload(owner_api, content=b"a,b\n1,2\n3,4,5\n")
    task = run_in_process(submit(owner_api, "files.csv_report", {"file": file_id}).json()["id"])
    assert task.status == "failed"
    assert task.attempts == 1  # a malformed file is not retried
    assert task.error == "PermanentError: Malformed CSV at line 3: expected 2 fields, found 3."
    assert not TaskFile.objects.filter(task=task, role="output").exists()


@pytest.mark.django_db
def test_a_csv_with_a_broken_quote_names_its_line(owner_api):
    file_id = upload(owner_api, content=b'a,b\n1,2\n"3,4\n')
    task = run_in_process(submit(owner_api, "files.csv_report", {"file": file_id}).json()["id"])
    assert task.status == "failed"
    assert task.error.startswith("PermanentError: Malformed CSV at line")


@pytest.mark.django_db
def test_checksum_streams_the_file_and_reports_its_digests(owner_api):
    content = bytes(range(256)) * 20_000  # 5 MB: several chunks
    file_id = upload(owner_api, name="blob.bin", content=content, content_type="application/octet-stream")
    task = run_in_process(submit(owner_api, "files.checksum", {"file": file_id}).json()["id"])
    assert task.status == "succeeded"
    assert task.result == {
        "file": file_id,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "md5": hashlib.md5(content).hexdigest(),
    }
    assert task.progress == 100


@pytest.mark.django_db
def test_a_large_presigned_upload_gets_its_sha256_from_a_checksum_task(
    owner, owner_api, s3_storage, settings, django_capture_on_commit_callbacks
):
    settings.FILES_INLINE_HASH_MAX_BYTES = 10
    content = b"x" * 1000
    stored_file, upload_form = services.stored_file_presign(
        owner=owner, name="big.bin", size=len(content), content_type="application/octet-stream"
    )
    posted = requests.post(upload_form["url"], data=upload_form["fields"], files={"file": ("big.bin", content)})
    assert posted.status_code in (200, 204)
    with django_capture_on_commit_callbacks():
        response = owner_api.post(f"/api/files/{stored_file.pk}/complete/")
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["sha256"]) == ("ready", "")
    task = Task.objects.get(kind="files.checksum")
    assert (task.owner, task.payload) == (owner, {"file": str(stored_file.pk)})
    run_in_process(task.pk)
    stored_file.refresh_from_db()
    assert stored_file.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.django_db
def test_a_task_cannot_name_another_users_file(owner_api, other_api):
    file_id = upload(other_api)
    response = submit(owner_api, "files.csv_report", {"file": file_id})
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["payload"]["file"] == [f"You have no file with id {file_id}."]
    assert not Task.objects.exists()
    # Each validation reads its own caller's owner (the payload serializer is built once per
    # thread, its context set per call): the file's owner may name it, then the other still not.
    assert submit(other_api, "files.csv_report", {"file": file_id}).status_code == 201
    assert submit(owner_api, "files.csv_report", {"file": file_id}).status_code == 400
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_a_task_cannot_name_a_file_that_is_not_ready(owner, owner_api, s3_storage):
    stored_file, _ = services.stored_file_presign(owner=owner, name="later.csv", size=10, content_type="text/csv")
    response = submit(owner_api, "files.csv_report", {"file": str(stored_file.pk)})
    assert response.status_code == 400
    assert "is not ready yet" in response.json()["error"]["fields"]["payload"]["file"][0]


@pytest.mark.django_db
def test_a_file_a_running_task_reads_cannot_be_deleted(owner_api):
    file_id = upload(owner_api)
    task_id = submit(owner_api, "files.checksum", {"file": file_id}).json()["id"]
    Task.objects.filter(pk=task_id).update(status="running")
    response = owner_api.delete(f"/api/files/{file_id}/")
    assert response.status_code == 409
    assert StoredFile.objects.filter(pk=file_id).exists()
    Task.objects.filter(pk=task_id).update(status="succeeded")
    assert owner_api.delete(f"/api/files/{file_id}/").status_code == 204


@pytest.mark.django_db
def test_file_kinds_describe_their_file_field(owner_api):
    kinds = {k["name"]: k for k in owner_api.get("/api/kinds/").json()}
    assert kinds["files.csv_report"]["payload_schema"]["properties"]["file"]["format"] == "uuid"
    assert kinds["files.checksum"]["payload_schema"]["required"] == ["file"]


@pytest.mark.django_db
def test_the_files_admin_shows_which_tasks_use_a_file(client, staff, owner_api):
    file_id = upload(owner_api)
    task_id = submit(owner_api, "files.checksum", {"file": file_id}).json()["id"]
    client.force_login(staff)
    changelist = client.get("/admin/files/storedfile/").content.decode()
    assert "Used by tasks" in changelist
    page = client.get(f"/admin/files/storedfile/{file_id}/change/").content.decode()
    assert f"/admin/tasks/task/{task_id}/change/" in page
    assert "(input, queued)" in page


# --- Results PostgreSQL cannot store (apps/core/text.py) -------------------------------------

NUL_HEADER_CSV = b"city,pop\x00ulation\nBerlin,3850809\n"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_csv_report_whose_result_holds_a_nul_fails_once_and_leaves_no_outputs(owner_api, s3_storage, worker_env):
    worker = Worker(worker_env | s3_storage.env, name="files-nul").start()
    try:
        file_id = upload(owner_api, content=NUL_HEADER_CSV)
        input_keys = s3_storage.object_keys()
        task_id = submit(owner_api, "files.csv_report", {"file": file_id}).json()["id"]
        wait_for(lambda: Task.objects.get(pk=task_id).is_final, timeout=30, message="the failed report")
        task = Task.objects.get(pk=task_id)
        assert task.status == "failed"
        assert task.attempts == 1  # it would fail again the same way: no retry
        assert task.error == "ResultNotStorable: result.columns[1] contains NUL (\\u0000)"
        assert task.result is None and task.lease_expires_at is None
        assert list(StoredFile.objects.values_list("pk", flat=True)) == [task.file_links.get(role="input").file_id]
        assert s3_storage.object_keys() == input_keys
    finally:
        worker.stop()


@pytest.mark.django_db
def test_a_finish_write_the_database_refuses_is_recorded_as_a_failure_and_its_outputs_removed(owner_api):
    # Any error of the finish write, injected in the database itself (rolled back with the test).
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {Task._meta.db_table} ADD CONSTRAINT refuse_success CHECK (status <> 'succeeded')")
    file_id = upload(owner_api)
    task = run_in_process(submit(owner_api, "files.csv_report", {"file": file_id}).json()["id"])
    assert task.status == "failed"
    assert task.attempts == 1  # refused once, refused again: no retry
    assert task.error.startswith("FinishNotRecorded: IntegrityError:")
    assert not TaskFile.objects.filter(task=task, role="output").exists()
    assert [str(pk) for pk in StoredFile.objects.values_list("pk", flat=True)] == [file_id]
    assert list(task.events.values_list("to_status", flat=True)) == ["queued", "running", "failed"]


@pytest.mark.django_db
def test_errors_tracebacks_and_progress_messages_quoting_nul_or_surrogates_are_recorded_readably(owner_api):
    from apps.tasks import services as task_services

    task_id = submit(owner_api, "demo.noop", {}).json()["id"]
    task = task_services.task_claim(task_id=task_id, worker="test-process")
    assert task_services.task_report_progress(task=task, progress=50, message="row \x00 of \ud800")
    assert Task.objects.get(pk=task_id).progress_message == "row \ufffd of \ufffd"
    status = task_services.task_fail(task=task, error="KeyError: 'a\x00b'", traceback="\ud800", permanent=True)
    assert status == "failed"
    task = Task.objects.get(pk=task_id)
    assert (task.error, task.traceback) == ("KeyError: 'a\ufffdb'", "\ufffd")
    assert task.events.get(to_status="failed").message == "Attempt 1 failed: KeyError: 'a\ufffdb'"
