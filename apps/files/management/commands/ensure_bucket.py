from django.core.management.base import BaseCommand

from apps.files import storage as object_store
from apps.files.models import StoredFile


class Command(BaseCommand):
    help = "Create the S3/MinIO bucket of the default storage if it does not exist (no-op with local storage)."

    def handle(self, *args, **options):
        storage = StoredFile._meta.get_field("file").storage
        created = object_store.ensure_bucket(storage)
        if created is None:
            self.stdout.write("Files are stored locally; there is no bucket to create.")
        elif created:
            self.stdout.write(self.style.SUCCESS(f"Created bucket {storage.bucket_name}."))
        else:
            self.stdout.write(f"Bucket {storage.bucket_name} already exists.")
