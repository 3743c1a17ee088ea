"""The task admin's search box with payload and result terms, and "retry all matching" on them."""

from urllib.parse import urlencode

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from apps.core.models import AuditEntry
from apps.tasks.admin.search import parse_search
from apps.tasks.models import Task, TaskStatus

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")
RETRY_MATCHING = reverse("admin:tasks_task_retry_matching")


def make_task(owner, **fields) -> Task:
    defaults = {
        "kind": "demo.noop",
        "title": "Invoice run",
        "status": TaskStatus.SUCCEEDED,
        "queued_at": timezone.now(),
    }
    return Task.objects.create(owner=owner, **(defaults | fields))


def failed(owner, **fields) -> Task:
    return make_task(owner, status=TaskStatus.FAILED, error="Upstream said no", attempts=1, max_retries=0, **fields)


def searched(client, term: str, **params):
    return client.get(f"{CHANGELIST}?{urlencode({'q': term, **params})}")


def listed(response) -> set:
    assert response.status_code == 200
    return {task.pk for task in response.context["cl"].result_list}


def test_a_payload_term_lists_the_tasks_whose_payload_holds_that_number(staff_client, owner, other_user):
    number = make_task(owner, payload={"customer": 42, "invoice": 7})
    theirs = make_task(other_user, payload={"customer": 42})
    make_task(owner, payload={"customer": "42"})
    make_task(owner, payload={"customer": 420})
    assert listed(searched(staff_client, "payload.customer=42")) == {number.pk, theirs.pk}


def test_a_quoted_value_is_a_string_and_a_bare_word_too(staff_client, owner):
    text = make_task(owner, payload={"customer": "42"})
    paid = make_task(owner, result={"status": "paid"})
    make_task(owner, payload={"customer": 42}, result={"status": "open"})
    assert listed(searched(staff_client, 'payload.customer="42"')) == {text.pk}
    assert listed(searched(staff_client, 'result.status="paid"')) == {paid.pk}
    assert listed(searched(staff_client, "result.status=paid")) == {paid.pk}


def test_nested_keys_with_dots_arrays_and_several_terms(staff_client, owner):
    order = make_task(owner, payload={"order": {"id": 1234, "tags": ["eu", "rush"]}}, result={"ok": True})
    make_task(owner, payload={"order": {"id": 1234}}, result={"ok": False})
    make_task(owner, payload={"order": 1234})
    assert listed(searched(staff_client, 'payload.order.tags=["rush"]')) == {order.pk}
    assert listed(searched(staff_client, "payload.order.id=1234 result.ok=true")) == {order.pk}
    assert listed(searched(staff_client, 'result.status="not paid"')) == set()
    assert listed(searched(staff_client, 'payload.order={"id": 1234, "tags": ["rush", "eu"]}')) == {order.pk}


def test_payload_terms_combine_with_title_words_and_the_filters(staff_client, owner):
    wanted = failed(owner, title="Invoice 7", payload={"customer": 42})
    make_task(owner, title="Invoice 7", payload={"customer": 42})  # succeeded
    failed(owner, title="Payroll", payload={"customer": 42})
    assert listed(searched(staff_client, "payload.customer=42 Invoice", status__exact="failed")) == {wanted.pk}


def test_the_ordinary_search_still_finds_ids_titles_and_emails(staff_client, owner, other_user):
    task = make_task(owner, title="Nightly export")
    make_task(other_user, title="Other work")
    assert listed(searched(staff_client, str(task.pk)[:8])) == {task.pk}
    assert listed(searched(staff_client, "Nightly export")) == {task.pk}
    assert listed(searched(staff_client, "owner@example.com")) == {task.pk}


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ('payload.name="\\u0000"', "payload.name contains NUL"),
        ('result.name="\\ud800"', "result.name contains an unpaired surrogate"),
        ("payload.amount=1e400", "payload.amount is a number out of range"),
    ],
)
def test_a_value_no_task_can_hold_lists_nothing_and_says_why(staff_client, owner, term, message):
    make_task(owner, payload={"name": "x", "amount": 1})
    response = searched(staff_client, term)
    assert listed(response) == set()
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(message in text for text in shown), shown


def test_the_help_under_the_search_box_shows_the_syntax(staff_client):
    html = staff_client.get(CHANGELIST).content.decode()
    assert "payload.customer=42" in html and "result.status=&quot;paid&quot;" in html


def test_retry_all_matching_counts_and_retries_only_the_searched_failures(operator_client, owner, other_user):
    mine = [failed(owner, payload={"customer": 42, "n": n}) for n in range(3)]
    theirs = failed(other_user, payload={"customer": 42})
    other_customer = failed(owner, payload={"customer": 43})
    done = make_task(owner, payload={"customer": 42})
    query = urlencode({"q": "payload.customer=42", "owner": owner.pk})
    page = operator_client.get(f"{RETRY_MATCHING}?{query}")
    assert page.status_code == 200
    assert '<strong id="retry-count">3</strong>' in page.content.decode()
    assert "search: <strong>payload.customer=42</strong>" in page.content.decode()
    assert "every task (no filter)" not in page.content.decode()
    assert Task.objects.filter(status=TaskStatus.FAILED).count() == 5  # nothing done on GET

    response = operator_client.post(f"{RETRY_MATCHING}?{query}", {"reason": "customer 42 fixed their account"})
    assert response.status_code == 302
    assert set(Task.objects.filter(pk__in=[t.pk for t in mine]).values_list("status", flat=True)) == {"queued"}
    for untouched, status in ((theirs, "failed"), (other_customer, "failed"), (done, "succeeded")):
        untouched.refresh_from_db()
        assert untouched.status == status
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.object_count) == ("task.bulk_retry", 3)
    assert "payload.customer" in audit.details["source"]


def test_search_terms_parse_into_templates_and_leave_the_rest_as_text():
    search = parse_search('payload.order.id=7 result.status="not paid" nightly  export payload.x=[1, 2] payload.y=7b')
    assert search.contains == [
        ("payload", {"order": {"id": 7}}),
        ("result", {"status": "not paid"}),
        ("payload", {"x": [1, 2]}),
        ("payload", {"y": "7b"}),  # not JSON: the word, as a string
    ]
    assert search.text == "nightly export"
    assert parse_search("  Nightly  export ").text == "Nightly  export"
    assert parse_search("payloads.x=1 my.payload.x=1").contains == []


def test_a_viewer_searches_by_payload_but_cannot_retry_what_it_finds(client, viewer, owner):
    task = failed(owner, payload={"customer": 42})
    client.force_login(viewer)
    response = searched(client, "payload.customer=42")
    assert listed(response) == {task.pk}
    assert "Retry all matching" not in response.content.decode()
    assert client.get(f"{RETRY_MATCHING}?{urlencode({'q': 'payload.customer=42'})}").status_code == 403
