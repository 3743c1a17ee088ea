import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.core.exceptions import PayloadTooLarge
from apps.files.models import StoredFile
from apps.files.services import stored_file_create
from apps.files.views import UploadSizeLimitHandler

pytestmark = pytest.mark.django_db

FILES = "/api/files/"
CSV = b"id,name\n1,Ada Lovelace\n2,Grace Hopper\n"


def upload(client, content=CSV, name="people.csv", content_type="text/csv"):
    uploaded = SimpleUploadedFile(name, content, content_type=content_type)
    return client.post(FILES, {"file": uploaded}, format="multipart")


def download_bytes(client, stored_file_id):
    """Follow the download as a client would: a redirect to the store, or the bytes themselves."""
    response = client.get(f"{FILES}{stored_file_id}/download/")
    if response.status_code == 302:
        fetched = requests.get(response["Location"], timeout=10)
        assert fetched.status_code == 200
        return fetched.content, fetched.headers
    assert response.status_code == 200
    return b"".join(response.streaming_content), response.headers


def test_multipart_upload_is_ready_with_size_and_sha256(storage_mode, owner_api, owner, stored_keys):
    response = upload(owner_api)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "ready"
    assert body["name"] == "people.csv"
    assert body["size"] == len(CSV)
    assert body["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert body["content_type"] == "text/csv"
    assert body["owner"] == owner.email
    assert body["download_url"] == f"http://testserver{FILES}{body['id']}/download/"
    stored_file = StoredFile.objects.get(pk=body["id"])
    assert stored_file.file.name == f"{owner.pk}/{stored_file.pk}/people.csv"
    assert stored_keys() == [stored_file.file.name]


def test_multipart_upload_and_download_round_trip(storage_mode, owner_api):
    content = bytes(range(256)) * 4096  # 1 MiB of every byte value
    created = upload(owner_api, content=content, name="blob.bin", content_type="application/octet-stream").json()
    downloaded, headers = download_bytes(owner_api, created["id"])
    assert downloaded == content
    assert headers["Content-Disposition"] == 'attachment; filename="blob.bin"'
    assert headers["Content-Type"] == "application/octet-stream"


def test_gzip_named_files_come_back_byte_for_byte(storage_mode, owner_api):
    content = b"\x1f\x8b\x08\x00not really gzip but bytes all the same"
    created = upload(owner_api, content=content, name="archive.tar.gz", content_type="application/gzip").json()
    downloaded, headers = download_bytes(owner_api, created["id"])
    assert downloaded == content
    assert "Content-Encoding" not in headers


def test_path_like_and_nul_names_are_sanitised_in_the_key(storage_mode, owner_api, owner, stored_keys):
    response = upload(owner_api, name="../../etc/pass\x00wd")
    assert response.status_code == 201
    stored_file = StoredFile.objects.get(pk=response.json()["id"])
    assert stored_file.file.name == f"{owner.pk}/{stored_file.pk}/passwd"
    assert stored_keys() == [stored_file.file.name]


def test_declared_content_type_is_stored_without_sniffing(storage_mode, owner_api):
    response = upload(owner_api, content=b"<html><script>alert(1)</script>", name="page.txt", content_type="text/plain")
    assert response.json()["content_type"] == "text/plain"
    _, headers = download_bytes(owner_api, response.json()["id"])
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Disposition"].startswith("attachment;")


def test_local_download_streams_an_attachment_with_nosniff(owner_api):
    created = upload(owner_api, name="page.html", content_type="text/html").json()
    response = owner_api.get(f"{FILES}{created['id']}/download/", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Length"] == str(len(CSV))
    assert "no-store" in response["Cache-Control"]
    assert b"".join(response.streaming_content) == CSV


def test_s3_download_redirects_to_a_short_lived_attachment_url(s3_storage, owner_api, owner):
    created = upload(owner_api, name="people.csv").json()
    response = owner_api.get(f"{FILES}{created['id']}/download/")
    assert response.status_code == 302
    assert "no-store" in response["Cache-Control"]
    url = urlsplit(response["Location"])
    query = parse_qs(url.query)
    assert url.path == f"/{s3_storage.name}/{owner.pk}/{created['id']}/people.csv"
    assert query["X-Amz-Expires"] == ["300"]
    assert query["response-content-disposition"] == ['attachment; filename="people.csv"']
    assert "X-Amz-Signature" in query


def test_upload_larger_than_the_limit_is_413_and_nothing_is_written(storage_mode, owner_api, settings, stored_keys):
    settings.FILES_MAX_UPLOAD_BYTES = 10
    response = upload(owner_api, content=b"x" * 11)
    assert response.status_code == 413
    assert response.json() == {
        "error": {"code": "payload_too_large", "message": "Files larger than 10 bytes cannot be uploaded."}
    }
    assert not StoredFile.objects.exists()
    assert stored_keys() == []


def test_body_far_beyond_the_limit_is_refused_from_its_content_length(storage_mode, owner_api, settings, stored_keys):
    settings.FILES_MAX_UPLOAD_BYTES = 1024
    response = upload(owner_api, content=b"x" * (200 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not StoredFile.objects.exists()
    assert stored_keys() == []


def test_upload_over_the_limit_in_a_browser_session_is_413_before_the_csrf_check_reads_it(owner, settings):
    settings.FILES_MAX_UPLOAD_BYTES = 10
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    data = {"csrfmiddlewaretoken": token, "file": SimpleUploadedFile("a.txt", b"x" * 11)}
    response = client.post(FILES, data, format="multipart")
    assert response.status_code == 413
    assert not StoredFile.objects.exists()
    settings.FILES_MAX_UPLOAD_BYTES = 100
    data["file"] = SimpleUploadedFile("a.txt", b"x" * 11)
    assert client.post(FILES, data, format="multipart").status_code == 201


def test_the_upload_handler_stops_at_the_first_chunk_past_the_limit():
    handler = UploadSizeLimitHandler(request=None, limit=10)
    assert handler.receive_data_chunk(b"12345", start=5) == b"12345"
    with pytest.raises(PayloadTooLarge):
        handler.receive_data_chunk(b"123456", start=5)


def test_file_exactly_at_the_limit_is_accepted(owner_api, settings):
    settings.FILES_MAX_UPLOAD_BYTES = len(CSV)
    assert upload(owner_api).status_code == 201


def test_empty_file_is_400(storage_mode, owner_api, stored_keys):
    response = upload(owner_api, content=b"")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"file": ["The submitted file is empty."]}
    assert not StoredFile.objects.exists()
    assert stored_keys() == []


def test_upload_without_a_file_is_400(owner_api):
    response = owner_api.post(FILES, {"name": "nothing.txt"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["file"] == ["No file was submitted."]


def test_anonymous_callers_get_401(api, owner):
    stored_file = stored_file_create(owner=owner, name="a.txt", content=b"a")
    assert upload(api).status_code == 401
    assert api.get(FILES).status_code == 401
    assert api.get(f"{FILES}{stored_file.pk}/download/").status_code == 401
    assert api.delete(f"{FILES}{stored_file.pk}/").json()["error"]["code"] == "not_authenticated"
    assert StoredFile.objects.count() == 1


def test_list_shows_only_the_callers_files_newest_first(owner_api, owner, other_user):
    first = stored_file_create(owner=owner, name="first.txt", content=b"1")
    second = stored_file_create(owner=owner, name="second.txt", content=b"2")
    stored_file_create(owner=other_user, name="theirs.txt", content=b"3")
    response = owner_api.get(FILES)
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [str(second.pk), str(first.pk)]


def test_list_pages_with_a_cursor(owner_api, owner):
    for number in range(3):
        stored_file_create(owner=owner, name=f"{number}.txt", content=b"x")
    page = owner_api.get(FILES, {"page_size": 2}).json()
    assert len(page["results"]) == 2
    rest = owner_api.get(page["next"]).json()
    assert [item["name"] for item in rest["results"]] == ["0.txt"]
    assert rest["next"] is None


def test_list_filters_by_state(s3_storage, owner_api, owner):
    stored_file_create(owner=owner, name="ready.txt", content=b"x")
    owner_api.post(f"{FILES}presign/", {"name": "p.txt", "size": 1, "content_type": "text/plain"}, format="json")
    pending = owner_api.get(FILES, {"state": "pending_upload"}).json()["results"]
    assert [item["name"] for item in pending] == ["p.txt"]


def test_list_takes_one_query_however_many_files(owner_api, owner, django_assert_num_queries):
    for number in range(5):
        stored_file_create(owner=owner, name=f"{number}.txt", content=b"x")
    with django_assert_num_queries(1):
        response = owner_api.get(FILES)
    assert len(response.json()["results"]) == 5


def test_staff_see_and_download_everyones_files(staff_api, owner, other_user):
    mine = stored_file_create(owner=owner, name="owner.txt", content=b"o")
    theirs = stored_file_create(owner=other_user, name="other.txt", content=b"t")
    listed = {item["id"] for item in staff_api.get(FILES).json()["results"]}
    assert listed == {str(mine.pk), str(theirs.pk)}
    assert staff_api.get(f"{FILES}{theirs.pk}/").status_code == 200
    assert download_bytes(staff_api, theirs.pk)[0] == b"t"


def test_another_users_file_is_404_on_every_endpoint(storage_mode, other_api, owner, stored_keys):
    stored_file = stored_file_create(owner=owner, name="private.txt", content=b"secret")
    base = f"{FILES}{stored_file.pk}/"
    responses = [
        other_api.get(base),
        other_api.get(f"{base}download/"),
        other_api.post(f"{base}complete/"),
        other_api.delete(base),
    ]
    assert [response.status_code for response in responses] == [404, 404, 404, 404]
    assert responses[0].json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert StoredFile.objects.filter(pk=stored_file.pk).exists()
    assert stored_keys() == [stored_file.file.name]
    assert str(stored_file.pk) not in str(other_api.get(FILES).json())


def test_detail_shows_the_file(owner_api, owner):
    stored_file = stored_file_create(owner=owner, name="notes.md", content=b"# hi", content_type="text/markdown")
    body = owner_api.get(f"{FILES}{stored_file.pk}/").json()
    assert body["name"] == "notes.md"
    assert body["content_type"] == "text/markdown"
    assert body["size"] == 4


def test_delete_removes_the_row_and_the_object(storage_mode, owner_api, owner, stored_keys):
    keep = stored_file_create(owner=owner, name="keep.txt", content=b"k")
    gone = stored_file_create(owner=owner, name="gone.txt", content=b"g")
    response = owner_api.delete(f"{FILES}{gone.pk}/")
    assert response.status_code == 204
    assert list(StoredFile.objects.values_list("pk", flat=True)) == [keep.pk]
    assert stored_keys() == [keep.file.name]


def test_unreachable_object_store_is_a_503(s3_storage, owner_api, settings):
    from botocore.config import Config

    options = settings.STORAGES["default"]["OPTIONS"] | {
        "endpoint_url": "http://127.0.0.1:9",  # the discard port: nothing listens
        "client_config": Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1),
    }
    settings.STORAGES = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": options}}
    response = upload(owner_api)
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "service_unavailable",
        "message": "The file store is unavailable; try again shortly.",
    }
    assert not StoredFile.objects.exists()
