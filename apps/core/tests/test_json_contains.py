"""JSON containment: the SQLite fallback gives PostgreSQL's answers.

Every case is asked of PostgreSQL's own `@>` and of the embedded mode's path (Django's SQL for
SQLite, run by a real SQLite connection with the function registered on connect); the
expected answers are written down too, so a change of either side shows.
"""

import json

import pytest
from django.db import connection
from django.db.utils import ConnectionHandler

from apps.core.exceptions import InvalidInput
from apps.core.json_contains import json_contains, parse_json_object
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db

# (document, template, PostgreSQL's answer)
CASES = [
    ({"customer": 42}, {"customer": 42}, True),
    ({"customer": 42, "x": 1}, {"customer": 42}, True),
    ({"customer": "42"}, {"customer": 42}, False),  # a string is not a number
    ({"customer": 42}, {"customer": "42"}, False),
    ({"customer": 42.0}, {"customer": 42}, True),  # numbers compare as numbers
    ({"amount": 0.1}, {"amount": 0.1}, True),
    ({"flag": 1}, {"flag": True}, False),  # true is not 1
    ({"flag": True}, {"flag": 1}, False),
    ({"flag": False}, {"flag": 0}, False),
    ({"gone": None}, {"gone": None}, True),
    ({}, {"gone": None}, False),  # a missing key is not null
    ({"a": 1}, {}, True),
    ({"order": {"id": 7, "lines": 3}}, {"order": {"id": 7}}, True),
    ({"order": {"id": 7}}, {"order": {"id": 8}}, False),
    ({"order": {"id": {"deep": [1, {"x": "y"}]}}}, {"order": {"id": {"deep": [{"x": "y"}]}}}, True),
    ({"order": 7}, {"order": {"id": 7}}, False),
    ({"tags": ["a", "b", "c"]}, {"tags": ["c", "a"]}, True),  # any order
    ({"tags": ["a"]}, {"tags": ["a", "a"]}, True),  # repeats do not count
    ({"tags": ["a", "b"]}, {"tags": ["z"]}, False),
    ({"tags": ["a", "b"]}, {"tags": []}, True),
    ({"tags": "a"}, {"tags": ["a"]}, False),
    ({"tags": ["a"]}, {"tags": "a"}, False),  # only a top-level array contains a scalar
    ({"m": [[1, 2], [3]]}, {"m": [[1]]}, True),
    ({"m": [1, [2]]}, {"m": [2]}, False),  # a scalar is matched by a scalar element only
    ({"m": [1, 2]}, {"m": [[1]]}, False),
    ({"items": [{"sku": "A", "n": 1}, {"sku": "B"}]}, {"items": [{"sku": "A"}]}, True),
    ({"items": [{"sku": "A"}, {"n": 1}]}, {"items": [{"sku": "A", "n": 1}]}, False),  # one element must hold both
    ({"items": [{"sku": "A"}]}, {"items": [["sku"]]}, False),
    ({"name": "Zoë ✓"}, {"name": "Zoë ✓"}, True),
    ({"name": "zoë"}, {"name": "Zoë"}, False),
    (["a", "b"], {"a": 1}, False),  # a result that is not an object
    ("paid", {"status": "paid"}, False),
    (42, {}, False),
]


def postgresql_answers() -> list[bool]:
    with connection.cursor() as cursor:
        return [
            cursor.execute("SELECT %s::jsonb @> %s::jsonb", [json.dumps(d), json.dumps(t)]).fetchone()[0]
            for d, t, _ in CASES
        ]


def test_postgresql_answers_as_written_down():
    assert postgresql_answers() == [expected for *_, expected in CASES]


def test_the_python_rules_give_postgresqls_answers():
    assert [json_contains(d, t) for d, t, _ in CASES] == [expected for *_, expected in CASES]


@pytest.fixture
def sqlite(tmp_path):
    """A real SQLite connection of Django's (the embedded mode's backend), with a bare task table."""
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "t.sqlite3"}})
    sqlite = handler["default"]
    with sqlite.cursor() as cursor:
        cursor.execute("CREATE TABLE tasks_task (id integer PRIMARY KEY, payload text NOT NULL, result text)")
    yield sqlite
    sqlite.close()


def sqlite_matches(sqlite, column: str, template: dict) -> set[int]:
    queryset = getattr(Task.objects.order_by(), f"{column}_contains")(template).values_list("id", flat=True)
    sql, params = queryset.query.get_compiler(connection=sqlite).as_sql()
    assert "taskflow_json_contains" in sql
    with sqlite.cursor() as cursor:
        return {row[0] for row in cursor.execute(sql, params).fetchall()}


def test_the_sqlite_path_gives_postgresqls_answers(sqlite):
    with sqlite.cursor() as cursor:
        for number, (document, _template, _expected) in enumerate(CASES):
            # As Django writes a JSONField on SQLite: json.dumps text.
            cursor.execute("INSERT INTO tasks_task VALUES (%s, %s, %s)", [number, "{}", json.dumps(document)])
    answers = [number in sqlite_matches(sqlite, "result", template) for number, (_d, template, _e) in enumerate(CASES)]
    assert answers == [expected for *_, expected in CASES]


def test_on_sqlite_a_task_without_a_result_matches_no_result_search(sqlite):
    with sqlite.cursor() as cursor:
        cursor.execute("INSERT INTO tasks_task VALUES (1, '{\"a\": 1}', NULL), (2, '{}', '{}')")
    assert sqlite_matches(sqlite, "result", {}) == {2}
    assert sqlite_matches(sqlite, "payload", {"a": 1}) == {1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Not valid JSON"),
        ("[1, 2]", "A JSON object is required"),
        ('"customer"', "A JSON object is required"),
        ("42", "A JSON object is required"),
        ("null", "A JSON object is required"),
        ('{"a": "\\u0000"}', "filter.a contains NUL"),
        ('{"a": "\\ud800"}', "filter.a contains an unpaired surrogate"),
        ('{"\\udfff": 1}', "has a key that contains an unpaired surrogate"),
        ('{"a": 1e400}', "filter.a is a number out of range"),
        ('{"a": NaN}', "filter.a is a number out of range"),
        ('{"a": ' + "9" * 5000 + "}", "Not valid JSON"),
        ('{"a": ' + "[" * 150 + "]" * 150 + "}", "Nested more than 100 levels deep"),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "Nested more than 100 levels deep"),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else None,
)
def test_a_template_that_no_task_could_hold_is_refused_naming_the_parameter(text, message):
    with pytest.raises(InvalidInput) as refused:
        parse_json_object(text, name="filter")
    assert list(refused.value.fields) == ["filter"]
    assert message in refused.value.fields["filter"][0]
