from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from apps.tasks import rollups


class Command(BaseCommand):
    help = (
        "Recompute the dashboard's rollups of finished tasks from the task table (beat keeps them "
        "up to date by itself). Buckets in the range take what the table holds now: the history "
        "of tasks already deleted by retention in that range is lost."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="ISO date or date-time (UTC unless it says otherwise); default: everything")

    def handle(self, *args, since=None, **options):
        moment = None
        if since:
            moment = parse_datetime(since)
            if moment is None and (day := parse_date(since)) is not None:
                moment = datetime(day.year, day.month, day.day)
            if moment is None:
                raise CommandError(f"--since: not an ISO date or date-time: {since!r}")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        result = rollups.rebuild(since=moment)
        self.stdout.write(f"Rollups rebuilt in {result['steps']} step(s), {result['rows_written']} row(s) written.")
