"""The task search box's payload and result terms: `payload.customer=42`, `result.status="paid"`.

A term names a path of keys (dots between them) and a JSON value: `42` is a number, `"42"` a
string, `true`, `null`, `[1, 2]` and `{"id": 7}` what JSON says; a value that is not JSON is
taken as a string (`result.status=paid`). Each term becomes a containment filter
(`payload @> '{"customer": 42}'`), served by the GIN indexes; several terms must all match.
Words that are not such terms go to the ordinary search (id, title, owner's email).
"""

import json
import re
from dataclasses import dataclass, field

from apps.core.exceptions import InvalidInput
from apps.core.json_contains import parse_json_object

# A term starts a word: `payload` or `result`, one or more `.key`, then `=` and its value.
TERM = re.compile(r"(?<!\S)(?P<column>payload|result)(?P<path>(?:\.[^.=\s]+)+)=")
DECODER = json.JSONDecoder()


@dataclass
class TaskSearch:
    contains: list[tuple[str, dict]] = field(default_factory=list)  # (column, template)
    text: str = ""


def _value(term: str, start: int, column: str) -> tuple[object, int]:
    """The JSON value at `start` (it may hold spaces: "not paid", [1, 2]) and where it ends;
    if none ends at a space or the end, the word up to the next space, as a string."""
    try:
        value, end = DECODER.raw_decode(term, start)
        if end == len(term) or term[end].isspace():
            return value, end
    except RecursionError:
        raise InvalidInput({column: ["This value is nested too deep."]}) from None
    except ValueError:  # not JSON (or an integer longer than Python reads)
        pass
    end = start
    while end < len(term) and not term[end].isspace():
        end += 1
    return term[start:end], end


def parse_search(term: str) -> TaskSearch:
    """Split a search into containment terms and the rest; InvalidInput for a value no task can hold."""
    search = TaskSearch()
    words = []
    position = 0
    while match := TERM.search(term, position):
        words.append(term[position : match.start()])
        value, position = _value(term, match.end(), match["column"])
        template = value
        for key in reversed(match["path"].split(".")[1:]):
            template = {key: template}
        # Checked as the API checks its filters: NUL, lone surrogates, 1e400, nesting depth.
        template = parse_json_object(json.dumps(template), name=match["column"])
        search.contains.append((match["column"], template))
    words.append(term[position:])
    # Without such terms the text stays as typed (the title search takes it whole).
    search.text = " ".join(" ".join(words).split()) if search.contains else term.strip()
    return search


def describe_error(exc: InvalidInput) -> str:
    return "Search: " + "; ".join(exc.messages)
