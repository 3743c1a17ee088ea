"""The S3 storage of StoredFile (MinIO in docker-compose): STORAGES["default"] when S3 is set."""

from storages.backends.s3 import S3Storage


class ObjectStorage(S3Storage):
    """django-storages' S3Storage, minus its guess of a Content-Encoding from the name.

    S3Storage stores `report.csv.gz` with `Content-Encoding: gzip`, so HTTP clients unpack
    it on download and save different bytes than were uploaded. TaskFlow stores bytes as
    given, with the content type the client declared.
    """

    def _get_write_parameters(self, name, content=None):
        params = super()._get_write_parameters(name, content)
        if "ContentEncoding" not in self.get_object_parameters(name):
            params.pop("ContentEncoding", None)
        return params
