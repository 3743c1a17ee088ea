"""The API's parsers: DRF's, refusing what no later step should have to handle.

JSON: Python's decoder recurses once per level: a body of 100,000 `[` was a RecursionError
(a 500), and a few hundred levels already make every later step (validation, size checks,
PostgreSQL's jsonb) walk deep recursions. Nothing TaskFlow accepts needs more than
MAX_JSON_DEPTH levels, so deeper bodies are a 400 like any other malformed JSON.

Text PostgreSQL cannot store (NUL, unpaired surrogates: apps/core/text.py), in a key or a
value at any depth, and numbers too large for a float are a 400 naming the field by its path
(`payload.name`, `tasks[3].payload.x`), found by the same walk that measures the depth.
Form and multipart bodies: field names and values with NUL (the only one of
the two a form can carry: undecodable bytes become U+FFFD) are a 400 naming the field.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from .text import UNSTORABLE, describe, json_problem, storable_text

MAX_JSON_DEPTH = 100


def _too_deep() -> ParseError:
    return ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep")


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        problem = json_problem(data, max_depth=MAX_JSON_DEPTH)
        if problem:
            path, reason = problem
            if reason == "depth":
                raise _too_deep()
            raise ValidationError({path or "non_field_errors": [f"This value {reason}, which cannot be stored."]})
        return data


def _check_form(data) -> None:
    for name, values in data.lists():
        if UNSTORABLE.search(name):
            raise ValidationError({storable_text(name): [f"This field name contains {describe(name)}."]})
        for value in values:
            if isinstance(value, str) and UNSTORABLE.search(value):
                raise ValidationError({name: [f"This value contains {describe(value)}, which cannot be stored."]})


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        _check_form(parsed.data)  # file names are cleaned where files are stored (apps/files/models.py)
        return parsed


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _check_form(data)
        return data
