"""The users admin (task counts, API keys) and the roles the accounts.0002 migration creates."""

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.accounts import services
from apps.accounts.models import ApiKey, Quota, User
from apps.core.models import AuditEntry
from apps.tasks.models import Task
from conftest import role_group

pytestmark = pytest.mark.django_db

USERS = reverse("admin:accounts_user_changelist")
roles_migration = importlib.import_module("apps.accounts.migrations.0002_roles")


def add_tasks(user, **counts):
    Task.objects.bulk_create(
        [Task(owner=user, kind="demo.noop", status=s) for s, n in counts.items() for _ in range(n)]
    )


def test_user_list_shows_each_users_task_counts_by_status(client, staff, owner, other_user):
    add_tasks(owner, succeeded=3, failed=2)
    add_tasks(other_user, queued=1)
    client.force_login(staff)
    response = client.get(USERS)
    html = response.content.decode()
    assert '<span class="tf-status tf-status-succeeded" title="Succeeded">3</span>' in html
    assert '<span class="tf-status tf-status-failed" title="Failed">2</span>' in html
    assert '<span class="tf-status tf-status-queued" title="Queued">1</span>' in html


def test_user_list_counts_tasks_with_one_query_whatever_the_number_of_users(client, staff, owner, make_user):
    add_tasks(owner, succeeded=2)
    client.force_login(staff)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            client.get(USERS)
        return len(captured.captured_queries)

    few = queries()
    for n in range(15):
        add_tasks(make_user(f"user{n}@example.com"), failed=1)
    assert queries() == few


def test_user_page_shows_task_counts_and_api_keys_with_their_state(client, staff, owner):
    add_tasks(owner, running=1)
    active, _ = services.api_key_create(user=owner, name="ci")
    revoked, _ = services.api_key_create(user=owner, name="old laptop")
    services.api_key_revoke(api_key=revoked)
    client.force_login(staff)
    html = client.get(reverse("admin:accounts_user_change", args=[owner.pk])).content.decode()
    assert 'title="Running">1</span>' in html
    assert "ci" in html and active.prefix in html and "old laptop" in html
    assert html.count(">active<") == 1 and html.count(">revoked<") == 1


def test_revoking_a_users_api_keys_from_the_user_list_is_audited(client, staff, owner):
    first, _ = services.api_key_create(user=owner, name="a")
    second, _ = services.api_key_create(user=owner, name="b")
    client.force_login(staff)
    response = client.post(
        USERS, {"action": "revoke_all_api_keys", "_selected_action": [owner.pk], "index": "0"}, follow=True
    )
    assert "Revoked 2 API key(s)." in response.content.decode()
    assert ApiKey.objects.active().count() == 0
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.object_count, audit.user) == ("api_key.revoke", 2, staff)
    assert set(audit.object_ids) == {str(first.pk), str(second.pk)}


def test_revoking_keys_from_the_api_key_list_is_audited(client, staff, owner):
    key, _ = services.api_key_create(user=owner, name="a")
    client.force_login(staff)
    client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [key.pk], "index": "0"},
    )
    key.refresh_from_db()
    assert not key.is_active
    assert AuditEntry.objects.get().object_ids == [str(key.pk)]


def test_operators_may_view_and_act_on_tasks_and_viewers_may_only_view():
    # The groups as the migrations made them (made again if a transactional test flushed them).
    operators = set(role_group("Operators").permissions.values_list("codename", flat=True))
    viewers = set(role_group("Viewers").permissions.values_list("codename", flat=True))
    looking = {"view_task", "view_taskevent", "view_auditentry", "view_storedfile", "view_taskresult"}
    assert looking <= viewers and looking <= operators
    assert {"retry_task", "cancel_task"} <= operators
    assert not {"retry_task", "cancel_task"} & viewers
    # The only model Operators edit is the concurrency limits (accounts.0005); Viewers edit nothing.
    edits = {codename for codename in operators | viewers if codename.startswith(("add_", "change_", "delete_"))}
    assert edits == {"add_concurrencylimit", "change_concurrencylimit", "delete_concurrencylimit"}
    assert not edits & viewers and "view_concurrencylimit" in viewers


def test_operators_and_viewers_reach_the_task_list_but_not_the_users(client, operator, viewer):
    for user in (operator, viewer):
        client.force_login(user)
        assert client.get(reverse("admin:tasks_task_changelist")).status_code == 200
        assert client.get(reverse("admin:core_auditentry_changelist")).status_code == 200
        assert client.get(USERS).status_code == 403


def test_the_roles_migration_can_be_undone_and_done_again():
    roles_migration.delete_roles(apps, None)
    assert not Group.objects.filter(name__in=["Operators", "Viewers"]).exists()
    roles_migration.create_roles(apps, None)
    roles_migration.create_roles(apps, None)  # idempotent
    assert Group.objects.get(name="Operators").permissions.filter(codename="retry_task").exists()
    assert Group.objects.filter(name__in=["Operators", "Viewers"]).count() == 2


def test_the_roles_migration_is_reversible_in_the_migration_graph():
    from django.db.migrations.loader import MigrationLoader

    migration = MigrationLoader(connection).get_migration("accounts", "0002_roles")
    assert all(operation.reversible for operation in migration.operations)


def test_api_key_list_and_page_show_the_key_without_its_secret(client, staff, owner):
    key, raw = services.api_key_create(user=owner, name="deploy bot")
    client.force_login(staff)
    listing = client.get(reverse("admin:accounts_apikey_changelist")).content.decode()
    page = client.get(reverse("admin:accounts_apikey_change", args=[key.pk])).content.decode()
    assert "deploy bot" in listing and key.prefix in listing and key.prefix in page
    assert raw not in listing and raw not in page and key.key_hash not in page


def test_adding_a_user_whose_email_differs_only_in_case_is_refused(client, staff, owner):
    client.force_login(staff)
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "Owner@Example.COM",
            "full_name": "Twin",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
            "usable_password": "true",
        },
    )
    assert response.status_code == 200
    assert "A user with this email address already exists." in response.content.decode()
    assert list(User.objects.filter(email__iexact="owner@example.com").values_list("email", flat=True)) == [owner.email]


def test_a_user_added_in_the_admin_is_stored_lowercased(client, staff):
    client.force_login(staff)
    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "New.Person@Example.COM",
            "full_name": "New",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
            "usable_password": "true",
            # the API keys inline's management form, as the page sends it
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert User.objects.filter(email="new.person@example.com").exists()


# --- Quotas ------------------------------------------------------------------------------------

QUOTAS = reverse("admin:accounts_quota_changelist")


def test_a_superuser_raises_a_users_quota_and_it_is_audited(client, superuser, owner, settings):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:accounts_quota_add"),
        {
            "user": owner.pk,
            "tasks_not_final": "250000",
            "schedules": "",
            "schedule_min_interval_seconds": "",
            "webhook_endpoints": "20",
        },
    )
    assert response.status_code == 302
    quota = owner.quota
    assert (quota.tasks_not_final, quota.schedules, quota.webhook_endpoints) == (250_000, None, 20)
    entry = AuditEntry.objects.get(action="quota.add")
    assert entry.user == superuser and entry.details["tasks_not_final"] == 250_000
    assert services.quota_limits(owner)["tasks_not_final"] == 250_000
    assert services.quota_limits(owner)["schedules"] == settings.QUOTAS["schedules"]
    listing = client.get(QUOTAS).content.decode()
    assert "250,000" in listing and f"default ({settings.QUOTAS['schedules']:,})" in listing


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_operators_and_viewers_cannot_change_quotas(client, request, role, owner):
    # Quotas are user administration, like users and API keys: superusers, or staff given
    # the accounts.*_quota permissions one by one.
    Quota.objects.create(user=owner, tasks_not_final=5)
    client.force_login(request.getfixturevalue(role))
    assert client.get(QUOTAS).status_code == 403
    change = reverse("admin:accounts_quota_change", args=[owner.pk])
    assert client.post(change, {"tasks_not_final": "500000"}).status_code == 403
    assert client.post(reverse("admin:accounts_quota_add"), {"user": owner.pk}).status_code == 403
    assert Quota.objects.get(user=owner).tasks_not_final == 5
    assert not AuditEntry.objects.filter(action__startswith="quota.").exists()


def test_a_user_who_is_not_staff_never_reaches_the_quotas(client, owner):
    client.force_login(owner)
    response = client.get(QUOTAS)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
