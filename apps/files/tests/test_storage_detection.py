"""A process configured for S3 knows it from its first request, whatever it imported before."""

import subprocess
import sys
import uuid
from http.client import HTTPConnection
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from apps.accounts.services import api_key_create
from apps.files.services import stored_file_create
from conftest import S3Bucket
from tests.support.processes import WebServer, gunicorn_command, http, process_starter


@pytest.fixture
def start_web():
    with process_starter(lambda env, command, name="web": WebServer(env, command, name=name)) as start:
        yield start


def test_ensure_bucket_in_a_fresh_process_creates_the_bucket(worker_env, s3_server):
    bucket = S3Bucket(s3_server, f"taskflow-test-{uuid.uuid4().hex[:16]}")

    done = subprocess.run(
        [sys.executable, "manage.py", "ensure_bucket"],
        cwd=settings.BASE_DIR,
        env=worker_env | bucket.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"Created bucket {bucket.name}.\n"
    bucket.client.head_bucket(Bucket=bucket.name)


@pytest.mark.django_db(transaction=True)
def test_a_fresh_web_process_presigns_and_redirects_downloads_from_its_first_request(
    s3_storage, worker_env, owner, start_web, tmp_path
):
    stored_file = stored_file_create(owner=owner, name="report.csv", content=b"a,b\n")
    _, raw_key = api_key_create(user=owner, name="fresh process")
    auth = {"Authorization": f"Api-Key {raw_key}"}
    env = worker_env | s3_storage.env | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    command = gunicorn_command(workers=1, threads=1)

    downloader = start_web(env, command, name="web-download")
    url = urlsplit(downloader.url(f"/api/files/{stored_file.pk}/download/"))
    connection = HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", url.path, headers=auth)
    download = connection.getresponse()
    download.read()
    connection.close()
    assert download.status == 302
    assert download.getheader("Location").startswith(f"{s3_storage.endpoint_url}/{s3_storage.name}/")

    presigner = start_web(env, command, name="web-presign")
    presign = http(
        "POST",
        presigner.url("/api/files/presign/"),
        headers=auth,
        json_body={"name": "events.csv", "size": 10, "content_type": "text/csv"},
    )
    assert presign.status == 201, presign.body
