from django.conf import settings
from django.core.management.base import BaseCommand
from django_celery_beat.schedulers import ModelEntry


class Command(BaseCommand):
    help = (
        "Create or update TaskFlow's system jobs (reaper, dispatcher, schedule sweep, retention, clean-ups) "
        "as celery-beat periodic tasks. Idempotent; run on every deploy (beat also does it at start)."
    )

    def handle(self, *args, **options):
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
            ModelEntry.from_entry(name, **entry)  # on celery's current app: taskflow_site's
            self.stdout.write(f"{name}: {entry['task']} every {entry['schedule']}s")
