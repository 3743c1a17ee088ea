import csv
import hashlib
import io
from datetime import timedelta

import pytest
import requests
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.core.exceptions import InvalidInput, PayloadTooLarge
from apps.files import services, tasks
from apps.files.models import StoredFile, StoredFileState

pytestmark = pytest.mark.django_db


class OneWayStream(io.RawIOBase):
    """A readable stream that cannot seek, like a pipe or an HTTP response body."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_create_from_bytes_stores_a_ready_file_with_its_hash(storage_mode, owner, stored_keys):
    stored_file = services.stored_file_create(
        owner=owner, name="report.json", content=b'{"rows": 3}', content_type="application/json"
    )
    assert stored_file.state == StoredFileState.READY
    assert stored_file.size == 11
    assert stored_file.sha256 == hashlib.sha256(b'{"rows": 3}').hexdigest()
    assert stored_file.content_type == "application/json"
    assert stored_file.file.name == f"{owner.pk}/{stored_file.pk}/report.json"
    assert stored_keys() == [stored_file.file.name]
    with services.stored_file_open(stored_file=stored_file) as stream:
        assert stream.read() == b'{"rows": 3}'


def test_create_from_a_stream_that_cannot_seek(storage_mode, owner):
    content = b"line\n" * 100_000
    stored_file = services.stored_file_create(owner=owner, name="out.txt", content=OneWayStream(content))
    assert stored_file.size == len(content)
    assert stored_file.sha256 == hashlib.sha256(content).hexdigest()
    assert stored_file.content_type == "application/octet-stream"
    with services.stored_file_open(stored_file=stored_file) as stream:
        assert stream.read() == content


def test_create_hashes_a_multipart_s3_upload_exactly_once_per_byte(s3_storage, owner):
    # Above boto3's 8 MiB threshold the object goes up in parts, read back and forth.
    content = hashlib.sha256(b"seed").digest() * (9 * 1024 * 1024 // 32 + 7)
    stored_file = services.stored_file_create(owner=owner, name="big.bin", content=io.BytesIO(content))
    assert stored_file.size == len(content)
    assert stored_file.sha256 == hashlib.sha256(content).hexdigest()
    assert s3_storage.read(stored_file.file.name) == content


def test_create_refuses_a_malformed_content_type(owner):
    with pytest.raises(InvalidInput, match="MIME type"):
        services.stored_file_create(owner=owner, name="x", content=b"x", content_type="text\ncsv")
    assert not StoredFile.objects.exists()


def test_create_sanitises_nul_and_path_names(storage_mode, owner):
    stored_file = services.stored_file_create(owner=owner, name="../../etc/pa\x00ss wd", content=b"x")
    assert stored_file.file.name == f"{owner.pk}/{stored_file.pk}/pa_ss_wd"
    assert stored_file.original_name == "../../etc/pass wd"


def test_presign_sanitises_nul_names(s3_storage, owner):
    stored_file, upload = services.stored_file_presign(
        owner=owner, name="../x\x00y.csv", size=3, content_type="text/csv"
    )
    assert upload["fields"]["key"] == f"{owner.pk}/{stored_file.pk}/x_y.csv"


def test_open_streams_s3_objects_for_line_by_line_reading(s3_storage, owner):
    rows = [["id", "name"]] + [[str(number), f"name {number}"] for number in range(1000)]
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    stored_file = services.stored_file_create(owner=owner, name="rows.csv", content=text.getvalue().encode())
    with services.stored_file_open(stored_file=stored_file) as stream:
        assert stream.read(2) == b"id"  # a partial read does not fetch or spool the rest
        stream.read1(1)
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        assert next(reader) == ["name"]
        assert sum(1 for _ in reader) == 1000


def test_open_of_a_missing_object_is_file_not_found(storage_mode, owner):
    stored_file = services.stored_file_create(owner=owner, name="gone.txt", content=b"x")
    stored_file.file.storage.delete(stored_file.file.name)
    with pytest.raises(FileNotFoundError):
        services.stored_file_open(stored_file=stored_file)


def test_upload_service_refuses_a_file_over_the_limit_without_writing(storage_mode, owner, settings, stored_keys):
    settings.FILES_MAX_UPLOAD_BYTES = 3
    with pytest.raises(PayloadTooLarge):
        services.stored_file_upload(owner=owner, uploaded_file=SimpleUploadedFile("a.txt", b"abcd"))
    assert not StoredFile.objects.exists()
    assert stored_keys() == []


def test_upload_service_replaces_a_malformed_content_type(owner):
    uploaded = SimpleUploadedFile("a.txt", b"abcd", content_type="nonsense")
    assert services.stored_file_upload(owner=owner, uploaded_file=uploaded).content_type == "application/octet-stream"


def test_a_failed_insert_leaves_no_object_behind(storage_mode, owner, stored_keys, django_user_model):
    ghost = django_user_model(email="ghost@example.com")  # never saved: the row cannot be inserted
    with pytest.raises(ValueError, match="unsaved related object"):
        services.stored_file_create(owner=ghost, name="orphan.txt", content=b"x")
    assert stored_keys() == []


def test_delete_of_a_file_whose_object_is_already_gone_succeeds(storage_mode, owner):
    stored_file = services.stored_file_create(owner=owner, name="a.txt", content=b"x")
    stored_file.file.storage.delete(stored_file.file.name)
    services.stored_file_delete(stored_file=stored_file)
    assert not StoredFile.objects.exists()


def pending_upload(owner, s3_storage, *, age: timedelta, upload: bool = True) -> StoredFile:
    stored_file, form = services.stored_file_presign(owner=owner, name="p.csv", size=3, content_type="text/csv")
    if upload:
        requests.post(form["url"], data=form["fields"], files={"file": ("p.csv", b"a,b")}, timeout=10)
    StoredFile.objects.filter(pk=stored_file.pk).update(created_at=timezone.now() - age)
    return stored_file


def test_stale_pending_uploads_are_deleted_with_their_objects(s3_storage, owner):
    stale_uploaded = pending_upload(owner, s3_storage, age=timedelta(days=2))
    stale_never_uploaded = pending_upload(owner, s3_storage, age=timedelta(days=2), upload=False)
    recent = pending_upload(owner, s3_storage, age=timedelta(hours=1))
    old_ready = services.stored_file_create(owner=owner, name="kept.txt", content=b"x")
    StoredFile.objects.filter(pk=old_ready.pk).update(created_at=timezone.now() - timedelta(days=30))

    deleted = services.delete_stale_pending_uploads(older_than=timedelta(days=1))

    assert deleted == 2
    assert set(StoredFile.objects.values_list("pk", flat=True)) == {recent.pk, old_ready.pk}
    assert sorted(s3_storage.object_keys()) == sorted([recent.file.name, old_ready.file.name])
    assert stale_uploaded.file.name not in s3_storage.object_keys()
    assert stale_never_uploaded.file.name not in s3_storage.object_keys()


def test_daily_cleanup_task_uses_the_configured_age(s3_storage, owner, settings):
    settings.FILES_PENDING_UPLOAD_MAX_AGE_SECONDS = 3600
    stale = pending_upload(owner, s3_storage, age=timedelta(hours=2))
    fresh = pending_upload(owner, s3_storage, age=timedelta(minutes=10))

    assert tasks.delete_stale_pending_uploads.apply().get() == 1

    assert list(StoredFile.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert stale.file.name not in s3_storage.object_keys()


def test_daily_cleanup_is_on_the_beat_schedule():
    entry = django_settings.CELERY_BEAT_SCHEDULE["taskflow-delete-stale-pending-uploads"]
    assert entry["task"] == tasks.delete_stale_pending_uploads.name
    assert entry["schedule"] == 24 * 3600
