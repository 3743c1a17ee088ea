from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import FileResponse, HttpResponseRedirect
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from apps.core.exceptions import Conflict, PayloadTooLarge, ServiceUnavailable
from apps.core.serializers import ReasonSerializer
from apps.core.viewsets import OwnedObjectViewSetMixin

from . import services
from . import storage as object_store
from .models import StoredFile
from .serializers import PresignInputSerializer, PresignOutputSerializer, StoredFileSerializer, UploadInputSerializer

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"Files larger than {settings.FILES_MAX_UPLOAD_BYTES} bytes cannot be uploaded.")


class UploadSizeLimitHandler(FileUploadHandler):
    """Stops a multipart upload the moment a file passes the limit, before it is spooled further."""

    def __init__(self, request, limit: int):
        super().__init__(request)
        self.limit = limit

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.limit:
            raise _too_large()
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handlers build the uploaded file


class IgnoreClientContentNegotiation(BaseContentNegotiation):
    """Downloads answer any Accept header; their errors are still JSON."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StoredFileViewSet(
    OwnedObjectViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's files (staff: everyone's). Another user's file is a 404 everywhere."""

    serializer_class = StoredFileSerializer
    filterset_fields = ["state"]
    staff_permissions = {"destroy": "files.delete_storedfile", "complete": "files.change_storedfile"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return StoredFile.objects.none()
        return StoredFile.objects.visible_to(self.request.user).select_related("owner")

    def initial(self, request, *args, **kwargs):
        if self.action == "create":
            self._limit_upload_size(request)
        super().initial(request, *args, **kwargs)

    @staticmethod
    def _limit_upload_size(request):
        """Refuse oversized uploads before reading the body: before authentication, too,
        because a session's CSRF check parses the body."""
        try:
            declared_length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared_length = 0
        if declared_length > settings.FILES_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES:
            raise _too_large()
        request.upload_handlers.insert(0, UploadSizeLimitHandler(request, settings.FILES_MAX_UPLOAD_BYTES))

    def handle_exception(self, exc):
        if object_store.storage_unavailable(exc):
            exc = ServiceUnavailable("The file store is unavailable; try again shortly.")
        return super().handle_exception(exc)

    @extend_schema(
        request={"multipart/form-data": UploadInputSerializer},
        responses={201: StoredFileSerializer, 413: OpenApiResponse(description="Larger than FILES_MAX_UPLOAD_BYTES.")},
    )
    def create(self, request):
        """Upload a file as multipart form data (field `file`); it is `ready` at once."""
        data = UploadInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        stored_file = services.stored_file_upload(owner=request.user, uploaded_file=data.validated_data["file"])
        return Response(self.get_serializer(stored_file).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=PresignInputSerializer,
        responses={
            201: PresignOutputSerializer,
            501: OpenApiResponse(description="The server stores files locally; use the multipart upload."),
        },
    )
    @action(detail=False, methods=["post"])
    def presign(self, request):
        """Start a direct upload to the object store; POST the bytes there, then call `complete`."""
        data = PresignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        stored_file, upload = services.stored_file_presign(owner=request.user, **data.validated_data)
        output = PresignOutputSerializer({"file": stored_file, "upload": upload}, context=self.get_serializer_context())
        return Response(output.data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ReasonSerializer, responses={200: StoredFileSerializer})
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        """Verify the uploaded object against what was declared and mark the file `ready`."""
        stored_file = self.reasoned_action(
            action="file.complete", write=lambda stored_file: services.stored_file_complete(stored_file=stored_file)
        )
        return Response(self.get_serializer(stored_file).data)

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The bytes, when files are stored locally."
            ),
            302: OpenApiResponse(description="To a short-lived presigned URL of the object store."),
            409: OpenApiResponse(description="The file is not ready yet."),
        }
    )
    @action(detail=True, methods=["get"], content_negotiation_class=IgnoreClientContentNegotiation)
    def download(self, request, pk=None):
        """Download as an attachment: a redirect to the object store, or streamed when local."""
        stored_file = self.get_object()
        if not stored_file.is_ready:
            raise Conflict("The file is not ready: complete its upload first.")
        storage = stored_file.file.storage
        if object_store.is_s3(storage):
            url = object_store.presigned_download_url(
                storage,
                key=stored_file.file.name,
                filename=stored_file.download_name,
                content_type=stored_file.content_type,
            )
            response = HttpResponseRedirect(url)
        else:
            response = FileResponse(
                services.stored_file_open(stored_file=stored_file),
                as_attachment=True,
                filename=stored_file.download_name,
                content_type=stored_file.content_type,
            )
            response["X-Content-Type-Options"] = "nosniff"
        patch_cache_control(response, private=True, no_store=True)  # the URL or bytes are the owner's
        return response

    def perform_destroy(self, instance):
        self.audited(
            instance,
            action="file.delete",
            write=lambda: services.stored_file_delete(stored_file=instance),
        )
