"""Registrations of one address that race each other, each on its own database connection."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from apps.accounts.models import User
from conftest import PASSWORD

REGISTER = "/api/auth/register/"
RACERS = 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_of_one_address_give_one_201_and_400s():
    # Mixed case: the address is one account however it is spelled.
    emails = [("Race@Example.com", "race@example.com", "RACE@EXAMPLE.COM")[n % 3] for n in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    responses = [None] * RACERS

    def register(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            responses[n] = APIClient().post(
                REGISTER, {"email": emails[n], "password": PASSWORD, "full_name": "Rae Race"}, format="json"
            )
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=register, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [400] * (RACERS - 1), statuses
    for response in responses:
        if response.status_code == 400:
            assert response.json()["error"]["fields"] == {"email": ["A user with this email address already exists."]}
    assert User.objects.filter(email__iexact="race@example.com").count() == 1
