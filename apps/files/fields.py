from rest_framework import serializers

from .models import StoredFile


class StoredFileField(serializers.Field):
    """A task payload field naming one of the task owner's `ready` files by id.

    Validates to the StoredFile; stored in the payload as the id. The owner comes from the
    serializer context (TaskFlow passes the task's owner), so nobody can name another
    user's file — staff included: a task's input files belong to its owner.
    """

    default_error_messages = {
        "invalid": "Give a file id (a UUID).",
        "not_found": "You have no file with id {value}.",
        "not_ready": "The file {value} is not ready yet: complete its upload first.",
    }
    json_schema = {"type": "string", "format": "uuid", "description": "The id of one of your ready files."}

    def to_internal_value(self, data):
        value = str(data)
        try:
            import uuid

            uuid.UUID(value)
        except ValueError:
            self.fail("invalid")
        owner = self.context.get("owner")
        stored_file = StoredFile.objects.owned_by(owner).filter(pk=value).first() if owner else None
        if stored_file is None:
            self.fail("not_found", value=value)
        if not stored_file.is_ready:
            self.fail("not_ready", value=value)
        return stored_file

    def to_representation(self, value):
        return str(value.pk if isinstance(value, StoredFile) else value)
