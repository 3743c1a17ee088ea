"""A small server-sent events reader for the tests: real HTTP, frames as they arrive."""

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Event:
    event: str
    data: dict
    id: int | None


class EventStream:
    """One open stream; `events()` yields frames until `until(event)` is true or time runs out."""

    def __init__(self, url: str, headers: dict | None = None, timeout: float = 30):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.comments = 0

    def json(self):
        return json.loads(self.response.read())

    def events(self, *, until=lambda event: False, timeout: float = 30):
        deadline = time.monotonic() + timeout
        fields: dict[str, str] = {}
        while time.monotonic() < deadline:
            line = self.response.readline()
            if not line:
                return  # the server ended the stream
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments += 1
            elif line == "":
                if "data" in fields:
                    event = Event(
                        fields.get("event", "message"),
                        json.loads(fields["data"]),
                        int(fields["id"]) if "id" in fields else None,
                    )
                    yield event
                    if until(event):
                        return
                fields = {}
            else:
                name, _, value = line.partition(": ")
                fields[name] = value
        raise TimeoutError("the stream did not deliver in time")

    def close(self):
        self.connection.close()


def parse_frames(text: str) -> list[Event]:
    """Every event of a whole stream's text (comments and the retry hint left out)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.partition(": ")[::2] for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            event_id = int(fields["id"]) if "id" in fields else None
            events.append(Event(fields.get("event", "message"), json.loads(fields["data"]), event_id))
    return events


def close_streamed(response) -> None:
    """Close a test client's streamed response (its stream gives back its slot) without ending
    the test's database connection, as the test client does for the responses it closes itself."""
    from django.core.signals import request_finished
    from django.db import close_old_connections

    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)
