from django.conf import settings
from django.core.management.base import BaseCommand

from apps.accounts.models import User


class Command(BaseCommand):
    help = "Create the demo staff user for local runs (idempotent) and print its credentials."

    def handle(self, *args, **options):
        email, password = settings.TASKFLOW_DEMO_EMAIL, settings.TASKFLOW_DEMO_PASSWORD
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            User.objects.create_superuser(email=email, password=password, full_name="TaskFlow Admin")
            self.stdout.write(self.style.SUCCESS(f"Created demo staff user {email} / {password}"))
        else:
            self.stdout.write(f"Demo staff user: {email} / {password} (unchanged if you changed it)")
