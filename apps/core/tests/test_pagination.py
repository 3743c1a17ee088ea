"""Cursor pagination on every cursor-paginated list: a cursor the list did not hand out is a 400."""

from base64 import b64encode
from urllib.parse import urlencode

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

CURSOR_LISTS = [
    "tasks:task-list",
    "tasks:schedule-list",
    "files:file-list",
    "webhooks:endpoint-list",
    "webhooks:delivery-list",
]


def cursor(**tokens) -> str:
    return b64encode(urlencode(tokens).encode()).decode()


TAMPERED_CURSORS = {
    "not a date": cursor(p="yesterday"),
    "year 0": cursor(p="0000-01-01 00:00:00+00:00"),
    "year 99999": cursor(p="99999-01-01 00:00:00+00:00"),
    "before year 1 in UTC": cursor(p="0001-01-01 00:00:00+05:00"),
    "after year 9999 in UTC": cursor(p="9999-12-31 23:59:59-05:00"),
    "a huge number": cursor(p="9" * 400),
    "a NUL": cursor(p="2024-01-01\x00"),
    "garbage base64": "%%%not-base64%%%",
    "not ascii": "é",
    "negative offset": cursor(o="-1"),
    "reverse not a number": cursor(r="x"),
}


@pytest.mark.parametrize("url_name", CURSOR_LISTS)
@pytest.mark.parametrize("tampered", TAMPERED_CURSORS.values(), ids=TAMPERED_CURSORS.keys())
def test_a_tampered_cursor_is_a_400_on_the_cursor(owner_api, url_name, tampered):
    response = owner_api.get(reverse(url_name), {"cursor": tampered})

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["cursor"]


@pytest.mark.parametrize("url_name", CURSOR_LISTS)
def test_a_cursor_with_a_valid_position_still_pages(owner_api, url_name):
    response = owner_api.get(reverse(url_name), {"cursor": cursor(p="2024-01-01 12:00:00.5+02:00", r="1")})

    assert response.status_code == 200, response.content
    assert response.json()["results"] == []
