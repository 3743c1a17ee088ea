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
    messages = wait_for(lambda: list(mail_dir.iterdir()), timeout=30, message="the welcome email")
    text = messages[0].read_text()
    assert "To: welcome@example.com" in text
    assert "Subject: Welcome to TaskFlow" in text
    assert "Hello Wendy" in text
