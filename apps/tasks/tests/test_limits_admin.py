"""The concurrency limits in the admin: who may see and edit them, the form's rules per scope,
the audit trail, odd input, and an edit that the next claim obeys at once."""

import logging

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.core.models import AuditEntry
from apps.tasks import fairness, limit_services, services
from apps.tasks.admin.limits import ConcurrencyLimitForm
from apps.tasks.models import ConcurrencyLimit, LimitScope, Task, TaskStatus

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_concurrencylimit_changelist")
ADD = reverse("admin:tasks_concurrencylimit_add")


def change_url(limit) -> str:
    return reverse("admin:tasks_concurrencylimit_change", args=[limit.pk])


def delete_url(limit) -> str:
    return reverse("admin:tasks_concurrencylimit_delete", args=[limit.pk])


@pytest.fixture(autouse=True)
def quiet_refusals(caplog):
    """Django logs each 403 as a warning with its traceback, which the development log format
    renders at length (about 2 s a refusal): these tests refuse on purpose, many times."""
    caplog.set_level(logging.ERROR, logger="django.request")


def form_data(**fields) -> dict:
    return {"scope": "kind", "kind": "demo.sleep", "owner": "", "limit": "2", "note": ""} | fields


def errors_of(response) -> dict:
    """The add/change page's errors by field, as the form holds them."""
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    return {name: [str(message) for message in messages] for name, messages in form.errors.items()}


@pytest.fixture
def kind_limit(db):
    return ConcurrencyLimit.objects.create(scope=LimitScope.KIND, kind="demo.sleep", limit=1, note="slow disks")


@pytest.fixture
def plain_staff(make_user):
    return make_user("plain-staff@example.com", is_staff=True)


def signed_in(client, user):
    if user is not None:
        client.force_login(user)
    return client


# --- Every role, every door -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "list_status", "add_status"),
    [
        ("staff", 200, 200),  # a superuser
        ("operator", 200, 200),
        ("viewer", 200, 403),
        ("plain_staff", 403, 403),  # staff without a group: no permission
    ],
)
def test_who_sees_the_limits_and_who_may_add_one(request, client, kind_limit, role, list_status, add_status):
    client = signed_in(client, request.getfixturevalue(role))
    listed = client.get(CHANGELIST)
    assert listed.status_code == list_status
    if list_status == 200:
        assert "demo.sleep" in listed.content.decode() and "slow disks" in listed.content.decode()
    assert client.get(ADD).status_code == add_status


@pytest.mark.parametrize("role", ["owner", None])  # a user who is not staff, and nobody signed in
def test_the_limits_are_not_for_users_outside_the_admin(client, request, kind_limit, role):
    client = signed_in(client, request.getfixturevalue(role) if role else None)
    for url in (CHANGELIST, ADD, change_url(kind_limit), delete_url(kind_limit)):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    response = client.post(change_url(kind_limit), form_data(limit="50"))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    kind_limit.refresh_from_db()
    assert kind_limit.limit == 1 and not AuditEntry.objects.exists()


def test_an_operator_adds_a_limit_and_it_is_audited(operator_client, operator):
    response = operator_client.post(ADD, form_data(limit="3", note="disk-bound"))
    assert response.status_code == 302
    limit = ConcurrencyLimit.objects.get()
    assert (limit.scope, limit.kind, limit.owner, limit.limit, limit.note) == (
        "kind",
        "demo.sleep",
        None,
        3,
        "disk-bound",
    )
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.object_type, entry.object_ids) == (
        operator,
        "concurrency_limit.add",
        "tasks.concurrencylimit",
        [str(limit.pk)],
    )
    assert entry.details == {"scope": "kind", "kind": "demo.sleep", "owner": None, "limit": 3, "note": "disk-bound"}


def test_an_operator_changes_a_limit_and_the_audit_keeps_before_and_after(operator_client, kind_limit):
    response = operator_client.post(change_url(kind_limit), form_data(limit="4", note="new disks"))
    assert response.status_code == 302
    kind_limit.refresh_from_db()
    assert (kind_limit.limit, kind_limit.note) == (4, "new disks")
    entry = AuditEntry.objects.get(action="concurrency_limit.change")
    assert entry.details["limit"] == 4 and entry.details["before"]["limit"] == 1
    assert entry.details["before"]["note"] == "slow disks"


def test_an_operator_deletes_a_limit_and_it_is_audited(operator_client, kind_limit):
    response = operator_client.post(delete_url(kind_limit), {"post": "yes"})
    assert response.status_code == 302
    assert not ConcurrencyLimit.objects.exists()
    entry = AuditEntry.objects.get(action="concurrency_limit.delete")
    assert entry.object_ids == [str(kind_limit.pk)] and entry.details["removed"][0]["kind"] == "demo.sleep"


def test_deleting_selected_limits_is_one_audit_entry_naming_each(operator_client, kind_limit, owner):
    other = ConcurrencyLimit.objects.create(scope=LimitScope.OWNER, owner=owner, limit=5)
    response = operator_client.post(
        CHANGELIST,
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [kind_limit.pk, other.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ConcurrencyLimit.objects.exists()
    entry = AuditEntry.objects.get()
    assert entry.action == "concurrency_limit.delete" and entry.object_count == 2
    assert {item["owner"] for item in entry.details["removed"]} == {None, "owner@example.com"}


def test_a_viewer_sees_a_limit_read_only_and_cannot_change_or_delete_it(viewer_client, kind_limit):
    before = model_to_dict(kind_limit)
    page = viewer_client.get(change_url(kind_limit))
    assert page.status_code == 200
    content = page.content.decode()
    assert "slow disks" in content and 'name="_save"' not in content and 'name="limit"' not in content
    assert viewer_client.post(change_url(kind_limit), form_data(limit="50")).status_code == 403
    assert viewer_client.post(delete_url(kind_limit), {"post": "yes"}).status_code == 403
    assert viewer_client.post(ADD, form_data(kind="demo.noop")).status_code == 403
    bulk = viewer_client.post(
        CHANGELIST, {"action": "delete_selected", ACTION_CHECKBOX_NAME: [kind_limit.pk], "post": "yes"}
    )
    assert bulk.status_code == 200  # Django ignores an action the user may not run
    kind_limit.refresh_from_db()
    assert model_to_dict(kind_limit) == before
    assert ConcurrencyLimit.objects.count() == 1 and not AuditEntry.objects.exists()


def test_staff_without_the_permission_cannot_write_a_limit(client, plain_staff, kind_limit):
    client.force_login(plain_staff)
    assert client.post(ADD, form_data(kind="demo.noop")).status_code == 403
    assert client.post(change_url(kind_limit), form_data(limit="50")).status_code == 403
    assert client.post(delete_url(kind_limit), {"post": "yes"}).status_code == 403
    assert ConcurrencyLimit.objects.get().limit == 1 and not AuditEntry.objects.exists()


def test_an_operator_picks_an_owner_through_the_task_lists_autocomplete(operator_client, owner):
    page = operator_client.get(ADD).content.decode()
    assert reverse("admin:tasks_task_owners") in page  # the owner select asks it
    found = operator_client.get(reverse("admin:tasks_task_owners"), {"term": "owner@"}).json()
    assert [item["text"] for item in found["results"]] == ["owner@example.com"]
    response = operator_client.post(ADD, form_data(scope="owner", kind="", owner=str(owner.pk), limit="7"))
    assert response.status_code == 302
    assert ConcurrencyLimit.objects.get(scope="owner").owner == owner


def test_the_default_for_each_owner_needs_neither_kind_nor_owner(operator_client):
    response = operator_client.post(ADD, form_data(scope="every_owner", kind="", limit="50"))
    assert response.status_code == 302
    assert ConcurrencyLimit.objects.get().scope == LimitScope.EVERY_OWNER


# --- The form's rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": ""}, "kind", "Choose the kind this limit is for."),
        ({"kind": "demo.nope"}, "kind", "Unknown kind 'demo.nope'. Registered kinds: "),
        ({"kind": "demo.sl\x00eep"}, "kind", "Null characters are not allowed."),
        ({"kind": "k" * 5000}, "kind", "Ensure this value has at most 100 characters"),
        ({"owner": "OWNER"}, "owner", "A kind's limit counts every owner's tasks: leave the owner empty."),
        ({"scope": "owner", "kind": ""}, "owner", "Choose the owner this limit is for."),
        (
            {"scope": "owner", "owner": "OWNER"},
            "kind",
            "An owner's limit counts all their kinds: leave the kind empty.",
        ),
        ({"scope": "owner", "kind": "", "owner": "999999"}, "owner", "Select a valid choice."),
        ({"scope": "owner", "kind": "", "owner": "abc"}, "owner", "Select a valid choice."),
        ({"scope": "owner", "kind": "", "owner": "1\x00"}, "owner", "Null characters are not allowed."),
        ({"scope": "owner", "kind": "", "owner": str(10**30)}, "owner", "Select a valid choice."),
        ({"scope": "owner", "kind": "", "owner": "-1"}, "owner", "Select a valid choice."),
        ({"scope": "every_owner"}, "kind", "The default for each owner counts all kinds: leave the kind empty."),
        ({"scope": "every_owner", "kind": "", "owner": "OWNER"}, "owner", "The default applies to each owner"),
        ({"scope": "everyone"}, "scope", "Select a valid choice. everyone is not one of the available choices."),
        ({"scope": ""}, "scope", "This field is required."),
        ({"limit": "-1"}, "limit", "Ensure this value is greater than or equal to 0."),
        ({"limit": str(10**20)}, "limit", "Ensure this value is less than or equal to 2147483647."),
        ({"limit": "1e3"}, "limit", "Enter a whole number."),
        ({"limit": "NaN"}, "limit", "Enter a whole number."),
        ({"limit": ""}, "limit", "This field is required."),
        ({"note": "why\x00"}, "note", "Null characters are not allowed."),
        ({"note": "n" * 201}, "note", "Ensure this value has at most 200 characters"),
    ],
)
def test_a_limit_that_breaks_a_rule_is_refused_on_its_field_and_nothing_is_written(
    operator_client, owner, fields, field, message
):
    fields = {name: str(owner.pk) if value == "OWNER" else value for name, value in fields.items()}
    errors = errors_of(operator_client.post(ADD, form_data(**fields)))
    assert field in errors and errors[field][0].startswith(message), errors
    assert not ConcurrencyLimit.objects.exists() and not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("existing", "posted", "field", "message"),
    [
        (
            {"scope": "kind", "kind": "demo.sleep", "limit": 1},
            {},
            "kind",
            "There is already a limit for kind demo.sleep (1 at once): change that one instead.",
        ),
        (
            {"scope": "owner", "limit": 5},
            {"scope": "owner", "kind": "", "owner": "OWNER"},
            "owner",
            "There is already a limit for owner@example.com (5 at once): change that one instead.",
        ),
        (
            {"scope": "every_owner", "limit": 50},
            {"scope": "every_owner", "kind": ""},
            "scope",
            "There is already a limit for each owner (the default) (50 at once): change that one instead.",
        ),
    ],
)
def test_a_second_limit_for_a_scope_is_a_form_error_not_a_server_error(
    operator_client, owner, existing, posted, field, message
):
    if existing["scope"] == "owner":
        existing = existing | {"owner": owner}
    ConcurrencyLimit.objects.create(**existing)
    posted = {name: str(owner.pk) if value == "OWNER" else value for name, value in posted.items()}
    errors = errors_of(operator_client.post(ADD, form_data(**posted)))
    assert errors == {field: [message]}
    assert ConcurrencyLimit.objects.count() == 1 and not AuditEntry.objects.exists()


def test_a_limit_may_be_saved_again_unchanged(operator_client, kind_limit):
    response = operator_client.post(change_url(kind_limit), form_data(limit="1", note="slow disks"))
    assert response.status_code == 302


def test_a_limit_on_a_kind_that_left_the_registry_can_still_be_changed(operator_client):
    gone = ConcurrencyLimit.objects.create(scope=LimitScope.KIND, kind="reports.retired", limit=1)
    page = operator_client.get(change_url(gone)).content.decode()
    assert "reports.retired (no longer registered)" in page
    response = operator_client.post(change_url(gone), form_data(kind="reports.retired", limit="0"))
    assert response.status_code == 302
    gone.refresh_from_db()
    assert gone.limit == 0
    # ...but no other limit may name it.
    errors = errors_of(operator_client.post(ADD, form_data(kind="reports.other")))
    assert errors["kind"][0].startswith("Unknown kind 'reports.other'")


def test_the_service_refuses_what_the_form_refuses(owner):
    """The rules live in limit_services, for every door (the admin's form calls them)."""
    with pytest.raises(limit_services.InvalidInput) as refused:
        limit_services.limit_save(limit=ConcurrencyLimit(scope="owner", limit=1), actor=None)
    assert refused.value.fields == {"owner": ["Choose the owner this limit is for."]}
    assert not ConcurrencyLimit.objects.exists()


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scope=st.sampled_from(["kind", "owner", "every_owner", "", "KIND", "kind\x00"]),
    kind=st.one_of(st.sampled_from(["demo.sleep", "demo.noop", ""]), st.text(max_size=120)),
    owner_value=st.one_of(st.just("OWNER"), st.just(""), st.text(max_size=12)),
    limit=st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), st.text(max_size=12)),
    note=st.text(max_size=220),
)
def test_odd_input_is_either_refused_by_the_form_or_stored_as_given(owner, scope, kind, owner_value, limit, note):
    """Whatever arrives, the form answers with errors or the limit is stored: never a database error."""
    data = {
        "scope": scope,
        "kind": kind,
        "owner": str(owner.pk) if owner_value == "OWNER" else owner_value,
        "limit": limit,
        "note": note,
    }
    form = ConcurrencyLimitForm(data=data)
    if not form.is_valid():
        assert form.errors
        return
    saved = limit_services.limit_save(limit=form.save(commit=False), actor=owner)
    stored = ConcurrencyLimit.objects.get(pk=saved.pk)
    cleaned = form.cleaned_data
    assert (stored.scope, stored.kind, stored.limit, stored.note) == (
        cleaned["scope"],
        cleaned["kind"],
        cleaned["limit"],
        cleaned["note"],
    )
    stored.delete()


# --- What the list shows ---------------------------------------------------------------------


def running(owner, kind, count=1):
    for _ in range(count):
        Task.objects.create(owner=owner, kind=kind, status=TaskStatus.RUNNING, started_at=timezone.now())


def queued(owner, kind, count=1):
    for _ in range(count):
        Task.objects.create(owner=owner, kind=kind, status=TaskStatus.QUEUED, queued_at=timezone.now())


def test_the_list_shows_what_each_limit_holds_now(staff_client, owner, other_user):
    ConcurrencyLimit.objects.create(scope=LimitScope.KIND, kind="demo.sleep", limit=2)
    ConcurrencyLimit.objects.create(scope=LimitScope.OWNER, owner=other_user, limit=3)
    ConcurrencyLimit.objects.create(scope=LimitScope.EVERY_OWNER, limit=1)
    running(owner, "demo.sleep", 2)
    queued(owner, "demo.sleep", 3)
    running(other_user, "demo.noop")
    queued(other_user, "demo.noop", 4)
    page = staff_client.get(CHANGELIST)
    rows = {
        row.scope: (row.use, row.owner_id) for row in page.context["cl"].result_list
    }  # the columns' figures, per row
    assert rows["kind"][0] == {"running": 2, "waiting": "3", "at_limit": True}
    assert rows["owner"][0] == {"running": 1, "waiting": "4", "at_limit": False}
    # owner runs 2 tasks against the default of 1: one owner at it, with 3 waiting.
    assert rows["every_owner"][0] == {"owners_at_it": 1, "waiting": "3", "at_limit": True}
    content = page.content.decode()
    assert "2 / 2" in content and "1 / 3" in content and "1 owner(s) at it" in content


def test_the_list_costs_the_same_queries_for_ten_limits_as_for_one(staff_client, owner, django_assert_max_num_queries):
    ConcurrencyLimit.objects.create(scope=LimitScope.KIND, kind="demo.sleep", limit=2)
    staff_client.get(CHANGELIST)  # the session and the user, once
    for index in range(10):
        ConcurrencyLimit.objects.create(scope=LimitScope.OWNER, owner=_user(index), limit=index)
    running(owner, "demo.sleep", 2)
    with django_assert_max_num_queries(14):  # session, user, page, count, filters; the figures in six
        assert staff_client.get(CHANGELIST).status_code == 200


def _user(index):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create(email=f"user{index}@example.com")  # no password to hash


# --- Live: the next claim obeys an edit made in the admin -------------------------------------


def test_an_admin_edit_applies_to_the_next_claim_in_this_process(operator_client, owner, kind_limit):
    kind_limit.limit = 0
    kind_limit.save()
    queued(owner, "demo.sleep")
    waiting = Task.objects.get()
    assert fairness.current_limits().kinds == {"demo.sleep": 0}
    assert services.task_claim(task_id=waiting.pk, worker="w1", queue=waiting.queue) is None
    operator_client.post(change_url(kind_limit), form_data(limit="1"))
    assert services.task_claim(task_id=waiting.pk, worker="w1", queue=waiting.queue).pk == waiting.pk
