from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

from .models import User


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_welcome_email(user_id: int) -> None:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return
    send_mail(
        subject="Welcome to TaskFlow",
        message=(
            f"Hello {user.get_short_name()},\n\n"
            "your TaskFlow account is ready. Get a token with POST /api/auth/token/ and submit\n"
            "your first task with POST /api/tasks/.\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[user.email],
    )


@shared_task(name="taskflow.flush_expired_tokens", ignore_result=True)
def flush_expired_tokens() -> None:
    """Daily (celery-beat): drop expired refresh tokens from the blacklist tables."""
    from django.core.management import call_command

    call_command("flushexpiredtokens")
