from django.core.management.base import BaseCommand

from apps.tasks.services import reap_stale_tasks


class Command(BaseCommand):
    help = "Recover lost runs and lost wake-ups once (beat runs the same every TASK_REAPER_INTERVAL)."

    def handle(self, *args, **options):
        counts = reap_stale_tasks()
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in counts.items()))
