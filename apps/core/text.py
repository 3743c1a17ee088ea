"""Text PostgreSQL cannot store: NUL and unpaired UTF-16 surrogates.

PostgreSQL's text and jsonb refuse U+0000, and psycopg cannot encode a lone surrogate
(U+D800-U+DFFF in a Python string) as UTF-8. Both arrive easily: JSON's `\\u0000` and
`\\ud800` escapes, `%00` in a URL, a NUL byte in a CSV header. Left alone each is a 500 at
the first write, or a worker that cannot record its finish.

What clients send is refused at the edge (apps/core/parsers.py, the query guard in
apps/core/middleware.py); what TaskFlow records itself (error texts, tracebacks, progress
messages, file names) is made storable with `storable_text`.

Paths name where a bad value sits in a JSON document: object keys joined with dots, list
indexes in brackets, from the top of the document: `payload.name`, `tasks[3].payload.x`,
`[0]` for a top-level list.
"""

import json
import math
import re

# In a Python string any surrogate code point is unpaired: a decoded pair is one astral character.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# In JSON serialized with ensure_ascii (as Django serializes JSONField): a NUL escape, or a
# surrogate escape that is not half of a pair. A literal backslash before "u0000" also matches;
# the exact walk below settles those.
_UNSTORABLE_JSON = re.compile(
    r"\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD, for what TaskFlow records itself."""
    return UNSTORABLE.sub(REPLACEMENT, text) if UNSTORABLE.search(text) else text


def describe(text: str) -> str:
    """What makes `text` unstorable, for an error message."""
    return "NUL (\\u0000)" if "\x00" in text else "an unpaired surrogate (\\ud800-\\udfff)"


def _render(trail, root: str) -> str:
    """The path of a trail, a linked list (parent, key) built as the walk goes down."""
    keys = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    path = root
    for key in reversed(keys):
        if isinstance(key, int):
            path = f"{path}[{key}]"
        else:
            key = storable_text(key)  # the path is shown and recorded: a bad key is named readably
            path = f"{path}.{key}" if path else key
    return path


def json_problem(value, *, root: str = "", max_depth: int | None = None) -> tuple[str, str] | None:
    """The first thing in a decoded JSON document PostgreSQL cannot store, as (path, reason).

    Walks without recursion: keys and strings holding NUL or a lone surrogate, numbers too
    large for a float (JSON's `1e400` decodes to infinity, which jsonb refuses), and, with
    `max_depth`, nesting deeper than that (reason "depth"). None when the document is fine.
    Paths are rendered only for the answer, never for the nodes walked.
    """
    stack = [(value, 1, None)]
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                return _render(trail, root), f"contains {describe(item)}"
        elif isinstance(item, dict):
            if max_depth is not None and depth > max_depth:
                return _render(trail, root), "depth"
            for key, child in item.items():
                if isinstance(key, str) and UNSTORABLE.search(key):
                    return _render((trail, key), root), f"has a key that contains {describe(key)}"
                stack.append((child, depth + 1, (trail, key)))
        elif isinstance(item, list):
            if max_depth is not None and depth > max_depth:
                return _render(trail, root), "depth"
            stack.extend((child, depth + 1, (trail, index)) for index, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return _render(trail, root), "is a number out of range"
    return None


def storable_json_problem(value, *, root: str) -> str | None:
    """Why PostgreSQL's jsonb would refuse `value` (a kind's result), or None; cheap when fine.

    Serializes once and scans the string (as the write will serialize it); only a suspect
    string pays for the walk that finds the path."""
    try:
        serialized = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problem = json_problem(value, root=root)
        if problem:
            return f"{problem[0]} {problem[1]}"
        return f"{root} is not JSON: {exc}"
    if "\\u" in serialized and _UNSTORABLE_JSON.search(serialized):
        problem = json_problem(value, root=root)
        if problem:
            return f"{problem[0]} {problem[1]}"
    return None
