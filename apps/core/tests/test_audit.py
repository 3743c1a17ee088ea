"""The audit trail: the audit_record and audited services and its read-only admin."""

import pytest
from django.urls import reverse

from apps.core.models import AUDIT_MAX_IDS, AuditEntry
from apps.core.services import audit_record, audited
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:core_auditentry_changelist")


def test_audit_record_keeps_the_full_count_and_a_capped_list_of_ids(operator):
    entry = audit_record(
        user=operator,
        action="task.bulk_retry",
        reason="outage",
        object_type="tasks.task",
        object_ids=range(AUDIT_MAX_IDS + 50),
        details={"mode": "inline"},
    )
    entry.refresh_from_db()
    assert (entry.user, entry.action, entry.reason, entry.object_count) == (
        operator,
        "task.bulk_retry",
        "outage",
        AUDIT_MAX_IDS + 50,
    )
    assert entry.object_ids == [str(n) for n in range(AUDIT_MAX_IDS)]
    assert entry.details == {"mode": "inline"} and entry.created_at is not None


def test_audit_record_takes_a_count_when_the_ids_were_not_all_loaded(operator):
    entry = audit_record(user=operator, action="x", object_type="tasks.task", object_ids=["a"], object_count=9)
    assert (entry.object_count, entry.object_ids) == (9, ["a"])


def test_audited_stores_the_write_and_its_entry_with_what_the_write_decided(operator, owner):
    with audited(user=operator, action="task.copy", reason="again", object_type="tasks.task") as audit:
        task = Task.objects.create(owner=owner, kind="demo.noop")
        audit.update(object_ids=[task.pk], details={"copy": str(task.pk)})
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.reason, entry.object_ids) == ("task.copy", "again", [str(task.pk)])
    assert entry.details == {"copy": str(task.pk)} and Task.objects.filter(pk=task.pk).exists()


def test_a_write_that_fails_inside_audited_leaves_neither_the_write_nor_the_entry(operator, owner):
    with pytest.raises(RuntimeError), audited(user=operator, action="task.copy", object_type="tasks.task"):
        Task.objects.create(owner=owner, kind="demo.noop")
        raise RuntimeError("the service refused")
    assert not Task.objects.exists() and not AuditEntry.objects.exists()


def test_a_discarded_audit_stores_no_entry_and_keeps_the_write(operator, owner):
    with audited(user=operator, action="api_key.revoke", object_type="accounts.apikey") as audit:
        Task.objects.create(owner=owner, kind="demo.noop")
        audit.discard()
    assert Task.objects.count() == 1 and not AuditEntry.objects.exists()


@pytest.fixture
def entries(operator, staff, owner):
    task = Task.objects.create(owner=owner, kind="demo.noop")
    return [
        audit_record(
            user=operator, action="task.retry", reason="flaky upstream", object_type="tasks.task", object_ids=[task.pk]
        ),
        audit_record(
            user=staff,
            action="task.bulk_cancel",
            reason="bad deploy",
            object_type="tasks.task",
            object_ids=[task.pk],
            object_count=1200,
        ),
    ]


def test_audit_changelist_lists_every_staff_action(client, viewer, entries):
    client.force_login(viewer)
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "operator@example.com" in html and "task.retry" in html and "flaky upstream" in html
    assert "task.bulk_cancel" in html and "1200" in html


@pytest.mark.parametrize(
    ("term", "expected"),
    [("operator@", "task.retry"), ("bulk_cancel", "task.bulk_cancel"), ("deploy", "task.bulk_cancel")],
)
def test_audit_search_finds_by_user_action_or_reason(client, viewer, entries, term, expected):
    client.force_login(viewer)
    results = client.get(CHANGELIST, {"q": term}).context["cl"].result_list
    assert [entry.action for entry in results] == [expected]


def test_audit_filters_by_action(client, viewer, entries):
    client.force_login(viewer)
    results = client.get(CHANGELIST, {"action": "task.retry"}).context["cl"].result_list
    assert [entry.action for entry in results] == ["task.retry"]


def test_audit_entry_page_is_read_only_and_links_the_affected_tasks(client, staff, entries):
    client.force_login(staff)
    entry = entries[1]
    response = client.get(reverse("admin:core_auditentry_change", args=[entry.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert reverse("admin:tasks_task_change", args=[entry.object_ids[0]]) in html
    assert "and 1,199 more" in html
    assert 'name="_save"' not in html
    assert client.post(reverse("admin:core_auditentry_change", args=[entry.pk]), {"reason": "x"}).status_code == 403
    assert client.get(reverse("admin:core_auditentry_add")).status_code == 403
    assert client.post(reverse("admin:core_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.count() == 2
