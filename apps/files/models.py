import re
import unicodedata
import uuid

from django.conf import settings
from django.db import models

# The last segment of an object key, in UTF-8 bytes: file systems allow 255 per name,
# and keys stay short enough for logs and Content-Disposition headers.
MAX_KEY_NAME_BYTES = 120
MAX_EXTENSION_BYTES = 16
FALLBACK_NAME = "file"
_UNSAFE_RUN = re.compile(r"[^\w.-]+")


def sanitize_file_name(name: str) -> str:
    """Turn any client-supplied name into one safe key segment.

    Only the last path segment survives (`../../etc/passwd` → `passwd`); anything but
    letters, digits, `_`, `-` and `.` (separators, spaces, NUL and other control
    characters) becomes `_`; leading dots go (no hidden or `..` names); the result is cut
    to MAX_KEY_NAME_BYTES keeping a short extension. Django's own `get_valid_filename`
    leaves the result unchanged, so the key computed here is the key stored.
    """
    name = unicodedata.normalize("NFC", str(name)).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_RUN.sub("_", name.strip()).lstrip("._-")
    stem, dot, extension = name.rpartition(".")
    if not (dot and stem and len(extension.encode()) <= MAX_EXTENSION_BYTES):
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_KEY_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode("utf-8", "ignore").rstrip("._-")
    return f"{stem or FALLBACK_NAME}{suffix}"


def clean_original_name(name: str) -> str:
    """The client's name kept for display: no control or format characters, at most 255.

    Lone surrogates (category Cs) go too: PostgreSQL cannot store them (apps/core/text.py)."""
    name = unicodedata.normalize("NFC", str(name))
    cleaned = "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cf", "Cs")).strip()
    return cleaned[:255] or sanitize_file_name(name)


def stored_file_key(instance: "StoredFile", filename: str) -> str:
    """`<owner id>/<file id>/<sanitised name>`: unique per file, never derived from a client path."""
    return f"{instance.owner_id}/{instance.id}/{sanitize_file_name(filename)}"


class StoredFileState(models.TextChoices):
    PENDING_UPLOAD = "pending_upload", "Pending upload"
    READY = "ready", "Ready"


class StoredFileQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Owners see their own files, staff see everyone's."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(owner=user)

    def owned_by(self, user):
        return self.filter(owner=user)

    def ready(self):
        return self.filter(state=StoredFileState.READY)

    def pending_upload(self):
        return self.filter(state=StoredFileState.PENDING_UPLOAD)


class StoredFile(models.Model):
    """A file in the default storage (S3/MinIO, or local media), owned by one user."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # PROTECT: deleting rows by cascade would strand their objects in the store; staff
    # delete a user's files first (the admin's delete action removes the objects too).
    # No index of its own: files_owner_created_idx starts with the owner.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="stored_files", db_index=False
    )
    file = models.FileField(upload_to=stored_file_key, max_length=255)
    original_name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField(help_text="Bytes: declared while pending, verified once ready.")
    content_type = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=20, choices=StoredFileState.choices, default=StoredFileState.PENDING_UPLOAD)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = StoredFileQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "stored file"
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="files_owner_created_idx"),
            models.Index(fields=["-created_at"], name="files_created_idx"),
            # The daily clean-up looks only at old pending uploads.
            models.Index(
                fields=["created_at"],
                condition=models.Q(state=StoredFileState.PENDING_UPLOAD),
                name="files_pending_created_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(state__in=StoredFileState.values), name="files_state_valid"),
        ]

    def __str__(self):
        return self.original_name

    @property
    def is_ready(self) -> bool:
        return self.state == StoredFileState.READY

    @property
    def download_name(self) -> str:
        """The sanitised key name: safe in a Content-Disposition header and on any disk."""
        return self.file.name.rsplit("/", 1)[-1] if self.file.name else sanitize_file_name(self.original_name)
