import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_ensure_bucket_creates_a_missing_bucket_once(s3_storage, capsys):
    s3_storage.client.delete_bucket(Bucket=s3_storage.name)

    call_command("ensure_bucket")
    assert capsys.readouterr().out == f"Created bucket {s3_storage.name}.\n"
    s3_storage.client.head_bucket(Bucket=s3_storage.name)

    call_command("ensure_bucket")
    assert capsys.readouterr().out == f"Bucket {s3_storage.name} already exists.\n"


def test_ensure_bucket_is_a_no_op_with_local_storage(capsys):
    call_command("ensure_bucket")
    assert capsys.readouterr().out == "Files are stored locally; there is no bucket to create.\n"
