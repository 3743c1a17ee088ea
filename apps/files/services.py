import hashlib
import logging
import re
from datetime import timedelta
from io import UnsupportedOperation
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from apps.core.exceptions import Conflict, InvalidInput, NotSupported, PayloadTooLarge

from . import storage as object_store
from .models import StoredFile, StoredFileState, clean_original_name

logger = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# type/subtype with optional parameters, printable ASCII only (it ends up in headers).
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;[\x20-\x7e]*)?$")


class _HashingFile(File):
    """Computes sha256 and size of the bytes a storage backend reads while it writes them.

    Backends may read a stream more than once (boto3 reads a body to checksum it, then
    seeks back to send it), so each byte is hashed only the first time the reading
    position passes it; `finish()` reads whatever was skipped.
    """

    def __init__(self, file, name: str, content_type: str):
        super().__init__(file, name)
        self.content_type = content_type  # django-storages sends it as the object's Content-Type
        self._sha256 = hashlib.sha256()
        self._position = 0
        self._hashed = 0

    def read(self, size=-1):
        data = self.file.read(size)
        start = self._position
        self._position += len(data)
        if start <= self._hashed < self._position:
            self._sha256.update(memoryview(data)[self._hashed - start :])
            self._hashed = self._position
        return data

    def seek(self, offset, whence=0):
        position = self.file.seek(offset, whence)
        self._position = self.file.tell() if position is None else position
        return self._position

    def tell(self):
        return self._position

    def finish(self) -> tuple[int, str]:
        """Return (size, sha256 hex digest) of the whole content."""
        try:
            self.seek(self._hashed)
        except (AttributeError, OSError, UnsupportedOperation):
            pass  # not seekable: the backend read it front to back, once
        else:
            while self.read(object_store.READ_CHUNK_BYTES):
                pass
        return self._hashed, self._sha256.hexdigest()


def _clean_content_type(content_type: str | None, *, strict: bool) -> str:
    content_type = (content_type or "").strip()
    if _CONTENT_TYPE.match(content_type) and len(content_type) <= 255:
        return content_type
    if strict:
        raise InvalidInput({"content_type": ["Enter a MIME type such as text/csv or application/octet-stream."]})
    return DEFAULT_CONTENT_TYPE


def _store(*, owner, name: str, content, content_type: str) -> StoredFile:
    """Write content under a fresh key and insert its `ready` row; no row without an object."""
    stored_file = StoredFile(
        owner=owner,
        original_name=clean_original_name(name),
        content_type=content_type,
        size=0,
        state=StoredFileState.READY,
    )
    hashing_file = _HashingFile(content, name=name, content_type=content_type)
    stored_file.file.save(name, hashing_file, save=False)
    try:
        stored_file.size, stored_file.sha256 = hashing_file.finish()
        stored_file.save(force_insert=True)
    except Exception:
        object_store.delete_object(stored_file.file.storage, stored_file.file.name)
        raise
    return stored_file


def stored_file_upload(*, owner, uploaded_file: UploadedFile) -> StoredFile:
    """Store a multipart upload; its declared content type is kept, never sniffed."""
    if uploaded_file.size > settings.FILES_MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"Files larger than {settings.FILES_MAX_UPLOAD_BYTES} bytes cannot be uploaded.")
    if uploaded_file.size == 0:
        raise InvalidInput({"file": ["The submitted file is empty."]})
    content_type = _clean_content_type(uploaded_file.content_type, strict=False)
    return _store(owner=owner, name=uploaded_file.name or "", content=uploaded_file, content_type=content_type)


def stored_file_create(
    *, owner, name: str, content: bytes | BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE
) -> StoredFile:
    """Store bytes or a readable binary stream (a task's output) as a `ready` file of `owner`."""
    if isinstance(content, bytes | bytearray):
        content = ContentFile(bytes(content))
    return _store(owner=owner, name=name, content=content, content_type=_clean_content_type(content_type, strict=True))


def stored_file_presign(*, owner, name: str, size: int, content_type: str) -> tuple[StoredFile, dict]:
    """Create a `pending_upload` file and a presigned POST the client sends its bytes with.

    The POST policy admits only this file's key, the declared content type and exactly the
    declared size, and expires after FILES_PRESIGN_EXPIRE_SECONDS; `stored_file_complete`
    checks the object again because some S3-compatible stores are lax about policies.
    (S3 has no "create only" condition for POST uploads: until it expires, the owner's form
    could replace the bytes; the expiry is kept to minutes for that reason.)

    With local file-system storage (the embedded default) there is no object store for the
    client to send to, so this raises NotSupported (501, code `presign_unavailable`);
    clients fall back to the multipart upload, which works in every mode.
    """
    storage = StoredFile._meta.get_field("file").storage
    if not object_store.is_s3(storage):
        raise NotSupported(
            "Presigned uploads need S3 storage; this server keeps files locally. "
            "Upload with a multipart POST to /api/files/ instead.",
            code="presign_unavailable",
        )
    if not 0 < size <= settings.FILES_MAX_PRESIGNED_UPLOAD_BYTES:
        raise InvalidInput(
            {"size": [f"Declare a size between 1 and {settings.FILES_MAX_PRESIGNED_UPLOAD_BYTES} bytes."]}
        )
    content_type = _clean_content_type(content_type, strict=True)
    stored_file = StoredFile(
        owner=owner,
        original_name=clean_original_name(name),
        size=size,
        content_type=content_type,
        state=StoredFileState.PENDING_UPLOAD,
    )
    stored_file.file.name = stored_file.file.field.generate_filename(stored_file, name)
    upload = object_store.presigned_post(
        storage,
        key=stored_file.file.name,
        content_type=content_type,
        size=size,
        expires_in=settings.FILES_PRESIGN_EXPIRE_SECONDS,
    )
    stored_file.save(force_insert=True)
    return stored_file, upload


def _hash_object(stored_file: StoredFile) -> tuple[int, str]:
    sha256, size = hashlib.sha256(), 0
    with stored_file_open(stored_file=stored_file) as stream:
        while chunk := stream.read(object_store.READ_CHUNK_BYTES):
            sha256.update(chunk)
            size += len(chunk)
    return size, sha256.hexdigest()


def _refuse_upload(stored_file: StoredFile, errors: dict) -> None:
    object_store.delete_object(stored_file.file.storage, stored_file.file.name)
    logger.info("refused presigned upload", extra={"stored_file": str(stored_file.pk), "errors": errors})
    raise InvalidInput(errors)


def stored_file_complete(*, stored_file: StoredFile) -> StoredFile:
    """Check a presigned upload against the stored object, record its sha256, mark it `ready`.

    No object yet → Conflict (409). Size or content type other than declared → the object
    is deleted and InvalidInput (400); the file stays pending, so the client may upload
    again while its policy lasts. Completing a `ready` file returns it unchanged.
    """
    if stored_file.state == StoredFileState.READY:
        return stored_file
    storage = stored_file.file.storage
    stat = object_store.stat_object(storage, stored_file.file.name)
    if stat is None:
        raise Conflict("Nothing has been uploaded for this file yet; POST it to the presigned URL first.")
    errors = {}
    if stat.size != stored_file.size:
        errors["size"] = [f"The uploaded object has {stat.size} bytes, not the {stored_file.size} declared."]
    if stat.content_type is not None and stat.content_type.lower() != stored_file.content_type.lower():
        errors["content_type"] = [
            f"The uploaded object is {stat.content_type!r}, not the {stored_file.content_type!r} declared."
        ]
    if errors:
        _refuse_upload(stored_file, errors)

    if stored_file.size > settings.FILES_INLINE_HASH_MAX_BYTES:
        # Hashing gigabytes would hold the request for minutes: the file is ready now and a
        # files.checksum task of its owner fills in the sha256.
        sha256 = ""
    else:
        size, sha256 = _hash_object(stored_file)
        if size != stored_file.size:  # replaced between the HEAD and the read
            _refuse_upload(stored_file, {"size": [f"The uploaded object changed to {size} bytes while being checked."]})

    # Concurrent completes hash the same object; only one moves the row.
    with transaction.atomic():
        completed = StoredFile.objects.filter(pk=stored_file.pk, state=StoredFileState.PENDING_UPLOAD).update(
            state=StoredFileState.READY, sha256=sha256, updated_at=timezone.now()
        )
        if completed and not sha256:
            _submit_checksum(stored_file)
    try:
        stored_file.refresh_from_db()
    except StoredFile.DoesNotExist:
        raise Conflict("The file was deleted while it was being completed.") from None
    return stored_file


def _submit_checksum(stored_file: StoredFile) -> None:
    from apps.tasks.services import TaskSpec, task_submit

    spec = TaskSpec(
        kind="files.checksum", payload={"file": str(stored_file.pk)}, title=f"Checksum of {stored_file.original_name}"
    )
    task_submit(owner=stored_file.owner, spec=spec)


def stored_file_delete(*, stored_file: StoredFile) -> None:
    """Delete the row and its object; if the store refuses, the row stays and a retry is safe.

    A file that a running task reads is not deleted (Conflict): the task would fail halfway.
    """
    from apps.tasks.models import TaskFileRole, TaskStatus

    in_use = stored_file.task_links.filter(role=TaskFileRole.INPUT, task__status=TaskStatus.RUNNING)
    if in_use.exists():
        raise Conflict("A running task is reading this file; cancel it or wait for it to finish.")
    with transaction.atomic():
        StoredFile.objects.filter(pk=stored_file.pk).delete()
        if stored_file.file.name:
            object_store.delete_object(stored_file.file.storage, stored_file.file.name)


def stored_file_open(*, stored_file: StoredFile) -> BinaryIO:
    """A readable binary stream of the file's bytes (streamed from S3, not spooled); close it."""
    return object_store.open_object(stored_file.file.storage, stored_file.file.name)


def delete_stale_pending_uploads(*, older_than: timedelta) -> int:
    """Delete `pending_upload` files (object and row) created more than `older_than` ago."""
    cutoff = timezone.now() - older_than
    stale = StoredFile.objects.pending_upload().filter(created_at__lt=cutoff)
    deleted = 0
    for pk in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            # Skip a row another sweep holds; re-check the state, a complete may have won.
            stored_file = stale.select_for_update(skip_locked=True).filter(pk=pk).first()
            if stored_file is None:
                continue
            stored_file_delete(stored_file=stored_file)
            deleted += 1
    if deleted:
        logger.info("deleted stale pending uploads", extra={"count": deleted})
    return deleted
