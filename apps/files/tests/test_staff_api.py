"""Staff in the API as in the admin: another user's files change only with the permission,
and every staff write is in the audit trail."""

import pytest
from django.core.files.storage import default_storage

from apps.core.models import AuditEntry
from apps.files.models import StoredFile, StoredFileState
from apps.files.services import stored_file_create
from conftest import client_for

pytestmark = pytest.mark.django_db

FILES = "/api/files/"


@pytest.fixture
def their_file(owner):
    return stored_file_create(owner=owner, name="people.csv", content=b"a,b\n1,2\n", content_type="text/csv")


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_viewers_and_operators_cannot_delete_another_users_file(request, their_file, role):
    response = client_for(request.getfixturevalue(role)).delete(f"{FILES}{their_file.pk}/")
    assert response.status_code == 403
    assert StoredFile.objects.filter(pk=their_file.pk).exists()
    assert default_storage.exists(their_file.file.name)
    assert not AuditEntry.objects.exists()


def test_a_viewer_cannot_complete_another_users_upload(viewer, owner):
    pending = StoredFile.objects.create(
        owner=owner, file="uploads/pending.csv", original_name="pending.csv", size=3, content_type="text/csv"
    )
    response = client_for(viewer).post(f"{FILES}{pending.pk}/complete/")
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.state == StoredFileState.PENDING_UPLOAD


def test_a_viewer_can_still_read_and_download_another_users_file(viewer, their_file):
    client = client_for(viewer)
    assert client.get(f"{FILES}{their_file.pk}/").status_code == 200
    assert client.get(f"{FILES}{their_file.pk}/download/").status_code == 200


def test_a_superuser_deletes_another_users_file_and_it_is_audited(superuser, owner, their_file):
    response = client_for(superuser).delete(f"{FILES}{their_file.pk}/")
    assert response.status_code == 204
    assert not StoredFile.objects.filter(pk=their_file.pk).exists()
    assert not default_storage.exists(their_file.file.name)
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.reason) == (superuser, "file.delete", "")
    assert (entry.object_type, entry.object_ids) == ("files.storedfile", [str(their_file.pk)])
    assert entry.details == {"via": "api", "owner": owner.pk}


def test_owners_delete_their_own_files_without_an_audit_entry(owner_api, their_file):
    assert owner_api.delete(f"{FILES}{their_file.pk}/").status_code == 204
    assert not AuditEntry.objects.exists()
