"""boto3 is loaded only by processes that use S3 (apps/files/storage.py)."""

import os
import subprocess
import sys

from django.conf import settings

PROBE = """
import sys
import django
django.setup()
from django.urls import resolve
resolve("/api/tasks/")
import apps.tasks.tasks, apps.files.kinds, apps.files.views
print(" ".join(name for name in ("boto3", "botocore", "storages.backends.s3") if name in sys.modules) or "none")
"""


def run_probe(**env) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "taskflow_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()[-1] if done.stdout.split() else ""


def test_a_process_without_s3_never_imports_boto3():
    assert run_probe(AWS_STORAGE_BUCKET_NAME="") == "none"


def test_the_s3_storage_is_the_one_place_that_does(s3_storage):
    from django.core.files.storage import storages

    from apps.files import storage as object_store

    assert object_store.is_s3(storages["default"])
    assert type(storages["default"]).__module__ == "apps.files.s3"
