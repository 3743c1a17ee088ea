"""Finding tasks by what they carry: `payload_contains` and `result_contains` on the task list."""

import json
from urllib.parse import quote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.tasks.models import Task, TaskStatus

pytestmark = pytest.mark.django_db

TASKS = "/api/tasks/"


def make_task(owner, **fields) -> Task:
    defaults = {"kind": "demo.noop", "status": TaskStatus.SUCCEEDED, "queued_at": timezone.now()}
    return Task.objects.create(owner=owner, **(defaults | fields))


def search(client, **params):
    query = "&".join(
        f"{name}={quote(value if isinstance(value, str) else json.dumps(value))}" for name, value in params.items()
    )
    return client.get(f"{TASKS}?{query}")


def found(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {task["id"] for task in response.json()["results"]}


def ids(*tasks) -> set[str]:
    return {str(task.pk) for task in tasks}


def test_a_payload_key_finds_the_tasks_that_carry_it(owner_api, owner):
    first = make_task(owner, payload={"customer": 42, "invoice": 1})
    second = make_task(owner, payload={"customer": 42, "invoice": 2})
    make_task(owner, payload={"customer": 43})
    make_task(owner, payload={})
    assert found(search(owner_api, payload_contains={"customer": 42})) == ids(first, second)
    assert found(search(owner_api, payload_contains={"customer": 42, "invoice": 2})) == ids(second)


def test_a_number_never_matches_a_string_nor_a_string_a_number(owner_api, owner):
    number = make_task(owner, payload={"customer": 42})
    text = make_task(owner, payload={"customer": "42"})
    boolean = make_task(owner, payload={"customer": True})
    make_task(owner, payload={"customer": 1})
    assert found(search(owner_api, payload_contains={"customer": 42})) == ids(number)
    assert found(search(owner_api, payload_contains={"customer": "42"})) == ids(text)
    assert found(search(owner_api, payload_contains={"customer": True})) == ids(boolean)
    assert found(search(owner_api, payload_contains={"customer": 42.0})) == ids(number)


def test_nested_objects_and_arrays_match_by_containment(owner_api, owner):
    order = make_task(owner, payload={"order": {"id": 1234, "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7"}]}})
    tagged = make_task(owner, payload={"tags": ["urgent", "eu", "invoice"]})
    assert found(search(owner_api, payload_contains={"order": {"id": 1234}})) == ids(order)
    assert found(search(owner_api, payload_contains={"order": {"lines": [{"sku": "B-7"}]}})) == ids(order)
    assert found(search(owner_api, payload_contains={"tags": ["invoice", "urgent"]})) == ids(tagged)
    assert found(search(owner_api, payload_contains={"tags": ["invoice", "us"]})) == set()
    assert found(search(owner_api, payload_contains={"tags": "urgent"})) == set()  # an array is not its element
    assert (
        found(search(owner_api, payload_contains={"order": {"id": 1234, "lines": [{"sku": "A-1", "qty": 3}]}})) == set()
    )


def test_a_search_that_matches_nothing_is_an_empty_page(owner_api, owner):
    make_task(owner, payload={"customer": 42})
    response = search(owner_api, payload_contains={"customer": 99})
    assert response.status_code == 200
    assert response.json()["results"] == [] and response.json()["next"] is None


def test_the_result_is_searched_the_same_way_and_tasks_without_one_never_match(owner_api, owner):
    paid = make_task(owner, result={"status": "paid", "invoice": {"total": 120.5}})
    still_open = make_task(owner, result={"status": "open"})
    make_task(owner, status=TaskStatus.QUEUED, result=None)
    make_task(owner, result=["status", "paid"])  # a result need not be an object
    assert found(search(owner_api, result_contains={"status": "paid"})) == ids(paid)
    assert found(search(owner_api, result_contains={"invoice": {"total": 120.5}})) == ids(paid)
    # The empty object: every result that is an object, none that is missing or a list.
    assert found(search(owner_api, result_contains={})) == ids(paid, still_open)


def test_payload_and_result_combine_with_the_status_kind_and_title_filters(owner_api, owner):
    wanted = make_task(owner, kind="demo.noop", status=TaskStatus.FAILED, title="Invoice 7", payload={"customer": 42})
    make_task(owner, kind="demo.noop", status=TaskStatus.SUCCEEDED, title="Invoice 8", payload={"customer": 42})
    make_task(owner, kind="demo.sleep", status=TaskStatus.FAILED, title="Invoice 9", payload={"customer": 42})
    make_task(owner, kind="demo.noop", status=TaskStatus.FAILED, title="Invoice 6", payload={"customer": 41})
    params = {"payload_contains": {"customer": 42}, "status": "failed", "kind": "demo.noop"}
    assert found(search(owner_api, **params)) == ids(wanted)
    assert found(search(owner_api, **params, search="Invoice 7")) == ids(wanted)
    assert found(search(owner_api, **params, search="Invoice 8")) == set()
    both = make_task(owner, status=TaskStatus.FAILED, payload={"customer": 42}, result={"retryable": True})
    assert found(search(owner_api, **params, result_contains={"retryable": True})) == ids(both)


def test_cursor_pages_walk_every_match_once_newest_first(owner_api, owner):
    matching = [make_task(owner, payload={"customer": 42, "n": n}) for n in range(5)]
    for n in range(4):
        make_task(owner, payload={"customer": 7, "n": n})
    url = f"{TASKS}?page_size=2&payload_contains={quote(json.dumps({'customer': 42}))}"
    seen = []
    while url:
        response = owner_api.get(url)
        assert response.status_code == 200
        seen += [task["id"] for task in response.json()["results"]]
        url = response.json()["next"]
        assert url is None or "payload_contains=" in url  # the filter stays on every page
    assert seen == [str(task.pk) for task in reversed(matching)]


def test_another_users_tasks_never_leak_into_a_search(owner_api, other_api, owner, other_user):
    mine = make_task(owner, payload={"customer": 42}, result={"status": "paid"})
    theirs = make_task(other_user, payload={"customer": 42}, result={"status": "paid"})
    assert found(search(owner_api, payload_contains={"customer": 42})) == ids(mine)
    assert found(search(other_api, result_contains={"status": "paid"})) == ids(theirs)
    assert found(search(owner_api, payload_contains={"customer": 42}, owner=str(other_user.pk))) == ids(mine)


def test_staff_search_every_owners_tasks_and_can_narrow_to_one_owner(staff_api, owner, other_user):
    mine = make_task(owner, payload={"customer": 42})
    theirs = make_task(other_user, payload={"customer": 42})
    assert found(search(staff_api, payload_contains={"customer": 42})) == ids(mine, theirs)
    assert found(search(staff_api, payload_contains={"customer": 42}, owner=other_user.email)) == ids(theirs)


def test_an_anonymous_search_is_a_401(api):
    response = search(api, payload_contains={"customer": 42})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("parameter", "raw", "message"),
    [
        ("payload_contains", "{customer: 42}", "Not valid JSON"),
        ("payload_contains", '{"customer": 42', "Not valid JSON"),
        ("result_contains", "paid", "Not valid JSON"),
        ("payload_contains", "[42]", "A JSON object is required"),
        ("result_contains", '"paid"', "A JSON object is required"),
        ("payload_contains", "42", "A JSON object is required"),
        ("payload_contains", "", "may not be blank"),
        ("payload_contains", "   ", "Not valid JSON"),
        ("payload_contains", '{"name": "\\u0000"}', "payload_contains.name contains NUL"),
        ("result_contains", '{"name": "\\ud83d"}', "result_contains.name contains an unpaired surrogate"),
        ("payload_contains", '{"amount": 1e999}', "payload_contains.amount is a number out of range"),
        ("payload_contains", '{"n": ' + "7" * 5000 + "}", "Not valid JSON"),
        ("payload_contains", '{"a": ' + "[" * 200 + "]" * 200 + "}", "Nested more than 100 levels deep"),
    ],
    ids=lambda value: value[:20],
)
def test_a_value_that_is_not_a_json_object_is_a_400_naming_the_parameter(owner_api, owner, parameter, raw, message):
    make_task(owner, payload={"customer": 42})
    response = owner_api.get(f"{TASKS}?{parameter}={quote(raw)}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [parameter]
    assert message in error["fields"][parameter][0]


def test_a_nul_byte_in_the_parameter_is_refused_before_any_view(owner_api):
    response = owner_api.get(f"{TASKS}?payload_contains=%7B%22a%22%3A%22%00%22%7D")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["payload_contains"]


def test_a_search_costs_no_more_queries_than_the_plain_list(owner_api, owner):
    for n in range(5):
        make_task(owner, payload={"customer": 42, "n": n})
    with CaptureQueriesContext(connection) as plain:
        assert owner_api.get(TASKS).status_code == 200
    with CaptureQueriesContext(connection) as searched:
        assert len(found(search(owner_api, payload_contains={"customer": 42}))) == 5
    assert len(searched) == len(plain)


def test_the_openapi_schema_documents_both_parameters(owner_api):
    schema = owner_api.get("/api/schema/?format=json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/tasks/"]["get"]["parameters"]}
    assert '{"customer": 42}' in parameters["payload_contains"]["description"]
    assert "result" in parameters["result_contains"]["description"]


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        return "\n".join(row[0] for row in cursor.execute(f"EXPLAIN {sql}").fetchall())


def test_on_a_seeded_table_the_search_reads_the_gin_indexes(staff_api, owner):
    # 20,000 tasks, four per customer, one result in 3,000 with the same item count; then
    # ANALYZE, as autovacuum would: the planner must prefer the GIN indexes to walking the
    # newest-first index and testing every row.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO tasks_task (id, owner_id, kind, title, description, payload, priority, queue, status,
                attempts, max_retries, timeout, progress, progress_message, result, error, traceback, worker,
                cancel_requested, callback_url, trigger, created_at, updated_at)
            SELECT gen_random_uuid(), %s, 'demo.noop', '', '',
                jsonb_build_object('customer', n %% 5000, 'echo', jsonb_build_object('batch', n)),
                'normal', 'default', 'succeeded', 1, 0, 30, 100, '',
                jsonb_build_object('items', n %% 3000, 'echo', n), '', '', '', false, '', 'api',
                now() - make_interval(secs => n), now()
            FROM generate_series(1, 20000) AS n
            """,
            [owner.pk],
        )
        cursor.execute("ANALYZE tasks_task")
    plans = {}
    for name, params, matches in [
        ("payload", {"payload_contains": {"customer": 4242}}, 4),
        ("result", {"result_contains": {"items": 1234}}, 7),
        ("with status", {"payload_contains": {"customer": 4242}, "status": "succeeded"}, 4),
    ]:
        with CaptureQueriesContext(connection) as captured:
            assert len(found(search(staff_api, **params))) == matches
        (page_query,) = [q["sql"] for q in captured.captured_queries if "@>" in q["sql"]]
        plans[name] = explain(page_query)
    assert "task_payload_gin" in plans["payload"], plans["payload"]
    assert "task_result_gin" in plans["result"], plans["result"]
    assert "task_payload_gin" in plans["with status"], plans["with status"]
