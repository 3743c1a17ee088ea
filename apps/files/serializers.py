from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from apps.core.serializers import StrictSerializer

from .models import StoredFile, StoredFileState


class StoredFileSerializer(serializers.ModelSerializer):
    owner = serializers.EmailField(source="owner.email", read_only=True)
    name = serializers.CharField(source="original_name", read_only=True)
    download_url = serializers.SerializerMethodField(help_text="Set once the file is ready.")

    class Meta:
        model = StoredFile
        fields = [
            "id",
            "owner",
            "name",
            "size",
            "content_type",
            "sha256",
            "state",
            "created_at",
            "updated_at",
            "download_url",
        ]
        read_only_fields = fields

    # null until the file is ready: the schema says so (a client generated from it must accept it).
    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_download_url(self, stored_file) -> str | None:
        if stored_file.state != StoredFileState.READY:
            return None
        return reverse("files:file-download", kwargs={"pk": stored_file.pk}, request=self.context.get("request"))


class UploadInputSerializer(StrictSerializer):
    file = serializers.FileField(help_text="The file's bytes; its part's Content-Type is stored as declared.")


class PresignInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=1024, help_text="The file's name; the server derives a safe key from it.")
    size = serializers.IntegerField(min_value=1, help_text="Exact size in bytes; the upload must match it.")
    content_type = serializers.CharField(max_length=255, help_text="MIME type; the upload must declare the same.")


class UploadTargetSerializer(serializers.Serializer):
    url = serializers.URLField()
    fields = serializers.DictField(
        child=serializers.CharField(), help_text="Send these form fields first, then the bytes as the `file` field."
    )


class PresignOutputSerializer(serializers.Serializer):
    file = StoredFileSerializer()
    upload = UploadTargetSerializer()
    complete_url = serializers.SerializerMethodField(help_text="POST here once the bytes are uploaded.")

    @extend_schema_field(OpenApiTypes.URI)
    def get_complete_url(self, presigned) -> str:
        return reverse("files:file-complete", kwargs={"pk": presigned["file"].pk}, request=self.context.get("request"))
