"""JSON containment (PostgreSQL's jsonb `@>`) on every database TaskFlow runs on.

PostgreSQL answers `document @> template` itself, from a GIN index (`jsonb_path_ops`).
SQLite, the embedded mode, has no such operator: `JSONContains` calls a Python function
registered on each SQLite connection instead, row by row (slower, same answers). Its rules
are PostgreSQL's, so both databases agree:

- an object contains another when it has each of its keys with a value that contains the
  other's value; the values' types must match (a number never matches a string: 42 is not
  "42"; true is not 1); numbers compare as numbers (1 matches 1.0);
- an array contains another when each element of the other is matched by some element of
  it: a scalar by an equal scalar, an object or array by an element of the same type that
  contains it (order and repeats do not matter; `[1, [2]]` does not contain `[2]`).

`parse_json_object` turns a query parameter or a search term into such a template, with the
same refusals as a request body (apps/core/parsers.py).
"""

import json
from decimal import Decimal
from functools import lru_cache

from django.db.models import F, JSONField, Value
from django.db.models.fields.json import DataContains

from .exceptions import InvalidInput
from .parsers import MAX_JSON_DEPTH
from .text import json_problem

SQLITE_FUNCTION = "taskflow_json_contains"


class JSONContains(DataContains):
    """`document @> template` as a filter expression; build it with `contains_filter`.

    PostgreSQL: Django's own `@>`. SQLite: the registered function (register_sqlite_functions).
    """

    def as_sqlite(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{SQLITE_FUNCTION}({lhs}, {rhs})", (*lhs_params, *rhs_params)


def contains_filter(column: str, template: dict) -> JSONContains:
    """`queryset.filter(contains_filter("payload", {"customer": 42}))`."""
    # The template typed as JSON: with a column reference (F) on the left, a lookup cannot
    # find the field that would convert it.
    return JSONContains(F(column), Value(template, output_field=JSONField()))


def _kind(value) -> str:
    # bool before int: True == 1 in Python, not in JSON.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def json_contains(document, template) -> bool:
    """Whether `document` contains `template`, by PostgreSQL's jsonb `@>` rules (decoded JSON on both sides)."""
    kind = _kind(template)
    if kind != _kind(document):
        return False
    if kind == "object":
        return all(key in document and json_contains(document[key], value) for key, value in template.items())
    if kind == "array":
        return all(any(json_contains(element, wanted) for element in document) for wanted in template)
    return document == template


@lru_cache(maxsize=64)
def _template(text: str):
    return json.loads(text, parse_float=Decimal)


def _sqlite_json_contains(document: str | None, template: str | None) -> int | None:
    if document is None or template is None:
        return None  # SQL NULL (a task without a result) matches nothing, as in PostgreSQL
    # Decimal, not float: PostgreSQL compares numbers exactly (0.1 and 0.10000000000000001 differ).
    return int(json_contains(json.loads(document, parse_float=Decimal), _template(template)))


def register_sqlite_functions(sender, connection, **kwargs) -> None:
    """connection_created receiver: give each SQLite connection the containment function."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(SQLITE_FUNCTION, 2, _sqlite_json_contains, deterministic=True)


def parse_json_object(text: str, *, name: str) -> dict:
    """`text` as a JSON object to match against, or InvalidInput naming `name`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidInput({name: [f"Nested more than {MAX_JSON_DEPTH} levels deep."]}) from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python reads
        raise InvalidInput({name: [f'Not valid JSON ({exc}); send an object, e.g. {{"customer": 42}}.']}) from None
    if not isinstance(value, dict):
        raise InvalidInput({name: [f'A JSON object is required, e.g. {{"customer": 42}}, not {_kind(value)}.']})
    problem = json_problem(value, root=name, max_depth=MAX_JSON_DEPTH)
    if problem:
        path, reason = problem
        if reason == "depth":
            raise InvalidInput({name: [f"Nested more than {MAX_JSON_DEPTH} levels deep."]})
        raise InvalidInput({name: [f"{path} {reason}, which no task can hold."]})
    return value
