import pytest
from django.core.files.storage import default_storage


@pytest.fixture(autouse=True)
def local_storage(settings, tmp_path):
    """Files tests never write into var/media: local storage goes to a fresh folder.

    Tests that use `s3_storage` replace this with the moto-backed S3 storage.
    """
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    return tmp_path / "media"


@pytest.fixture(params=["local", "s3"])
def storage_mode(request):
    """Run a test once on local storage (the embedded default) and once on S3."""
    if request.param == "s3":
        request.getfixturevalue("s3_storage")
    return request.param


@pytest.fixture
def stored_keys(storage_mode, local_storage):
    """Every key the default storage holds right now, whichever the mode."""

    def keys() -> list[str]:
        if storage_mode == "s3":
            return sorted(obj.key for obj in default_storage.bucket.objects.all())
        return sorted(str(path.relative_to(local_storage)) for path in local_storage.rglob("*") if path.is_file())

    return keys
