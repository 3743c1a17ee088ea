import pytest
from django.urls import reverse

from apps.files.models import StoredFile
from apps.files.services import stored_file_create, stored_file_presign

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:files_storedfile_changelist")


@pytest.fixture
def files(owner, other_user):
    return [
        stored_file_create(owner=owner, name="quarterly-report.csv", content=b"x" * 2048, content_type="text/csv"),
        stored_file_create(owner=other_user, name="holiday.jpg", content=b"y" * 10, content_type="image/jpeg"),
    ]


def test_changelist_shows_owner_name_size_type_state_and_a_download_link(
    staff_client, files, django_assert_max_num_queries
):
    with django_assert_max_num_queries(8):  # session, user, the page and its filters: not one per row
        response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "quarterly-report.csv" in html
    assert "owner@example.com" in html
    assert "2.0\xa0KB" in html
    assert "text/csv" in html
    assert "Ready" in html
    assert f'href="/api/files/{files[0].pk}/download/"' in html


def test_changelist_search_finds_files_by_name_and_by_owner_email(staff_client, files):
    by_name = staff_client.get(CHANGELIST, {"q": "quarterly"}).context["cl"].result_list
    by_owner = staff_client.get(CHANGELIST, {"q": "other@example"}).context["cl"].result_list
    assert [stored_file.pk for stored_file in by_name] == [files[0].pk]
    assert [stored_file.pk for stored_file in by_owner] == [files[1].pk]


def test_changelist_filters_by_state(staff_client, files, s3_storage, owner):
    pending, _ = stored_file_presign(owner=owner, name="later.csv", size=5, content_type="text/csv")
    result = staff_client.get(CHANGELIST, {"state__exact": "pending_upload"}).context["cl"].result_list
    assert [stored_file.pk for stored_file in result] == [pending.pk]
    assert "—" in staff_client.get(CHANGELIST, {"state__exact": "pending_upload"}).content.decode()


def test_change_page_is_a_read_only_view_with_the_object_key(staff_client, files):
    response = staff_client.get(reverse("admin:files_storedfile_change", args=[files[0].pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert files[0].file.name in html
    assert files[0].sha256 in html
    assert 'name="_save"' not in html
    assert staff_client.get(reverse("admin:files_storedfile_add")).status_code == 403


def test_admin_download_link_works_with_the_staff_session(staff_client, files):
    response = staff_client.get(f"/api/files/{files[1].pk}/download/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"y" * 10


def test_delete_action_removes_the_objects_from_the_store(staff_client, storage_mode, stored_keys, files):
    kept, deleted = files
    response = staff_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [str(deleted.pk)], "post": "yes"}
    )
    assert response.status_code == 302
    assert list(StoredFile.objects.values_list("pk", flat=True)) == [kept.pk]
    assert stored_keys() == [kept.file.name]


def test_delete_button_on_the_change_page_removes_the_object(staff_client, stored_keys, storage_mode, files):
    response = staff_client.post(reverse("admin:files_storedfile_delete", args=[files[0].pk]), {"post": "yes"})
    assert response.status_code == 302
    assert stored_keys() == [files[1].file.name]


def test_users_with_files_cannot_be_deleted_until_their_files_are(staff_client, files, owner):
    response = staff_client.get(reverse("admin:accounts_user_delete", args=[owner.pk]))
    assert "stored file" in response.content.decode().lower()
    assert response.context["protected"]
