"""/readyz asks the object store with a read, at most once per READYZ_STORAGE_CHECK_SECONDS."""

import pytest
from django.core.files.storage import storages

pytestmark = pytest.mark.django_db


@pytest.fixture
def s3_requests(s3_storage):
    """Every request boto3 sends for the default storage (botocore's own event hook)."""
    sent = []
    events = storages["default"].connection.meta.client.meta.events
    events.register("before-send.s3", lambda request, **_: sent.append((request.method, request.url)))
    return sent


def test_readyz_calls_within_the_interval_make_one_storage_round_trip(api, settings, s3_storage, s3_requests):
    settings.READYZ_STORAGE_CHECK_SECONDS = 60

    responses = [api.get("/readyz") for _ in range(5)]

    assert [response.status_code for response in responses] == [200] * 5
    assert [response.json()["checks"]["storage"] for response in responses] == ["ok"] * 5
    assert len(s3_requests) == 1
    assert s3_requests[0][0] == "HEAD"  # a read of the bucket: nothing written
    assert s3_storage.object_keys() == []


def test_readyz_with_no_interval_asks_the_store_every_time_and_sees_it_go(api, settings, s3_storage, s3_requests):
    settings.READYZ_STORAGE_CHECK_SECONDS = 0
    assert api.get("/readyz").status_code == 200

    s3_storage.client.delete_bucket(Bucket=s3_storage.name)
    try:
        response = api.get("/readyz")
    finally:
        s3_storage.client.create_bucket(Bucket=s3_storage.name)  # the fixture empties it afterwards

    assert response.status_code == 503
    assert response.json()["checks"]["storage"].startswith("error: ClientError")
    assert [method for method, _url in s3_requests] == ["HEAD", "HEAD"]
