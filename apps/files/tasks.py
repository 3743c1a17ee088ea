from datetime import timedelta

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(name="taskflow.delete_stale_pending_uploads", ignore_result=True)
def delete_stale_pending_uploads() -> int:
    """Daily (celery-beat): drop presigned uploads that were never completed."""
    older_than = timedelta(seconds=settings.FILES_PENDING_UPLOAD_MAX_AGE_SECONDS)
    return services.delete_stale_pending_uploads(older_than=older_than)
