import pytest

from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_registration_welcome_email_is_sent_by_a_real_worker(api, celery_worker, mail_dir):
    response = api.post(
        "/api/auth/register/",
        {"email": "welcome@example.com", "password": "a-long-and-unusual-passphrase", "full_name": "Wendy"},
        format="json",
    )
    assert response.status_code == 201

    # Django's file backend creates the file before it writes the message, and ends each
    # message with a line of 79 dashes: wait for a whole one.
    def written():
        return [text for text in (path.read_text() for path in mail_dir.iterdir()) if text.endswith("-" * 79 + "\n")]

    text = wait_for(written, timeout=30, message="the welcome email")[0]
    assert "To: welcome@example.com" in text
    assert "Subject: Welcome to TaskFlow" in text
    assert "Hello Wendy" in text
