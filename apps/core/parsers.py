"""The API's JSON parser: DRF's, with a bound on nesting.

Python's JSON decoder recurses once per level: a body of 100,000 `[` was a RecursionError
(a 500), and a few hundred levels already make every later step (validation, size checks,
PostgreSQL's jsonb) walk deep recursions. Nothing TaskFlow accepts needs more than
MAX_JSON_DEPTH levels, so deeper bodies are a 400 like any other malformed JSON.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_JSON_DEPTH = 100


def json_depth(value) -> int:
    """Levels of nested arrays and objects, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep") from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep")
        return data
