"""File helpers shared by the sync and async clients: sources, progress, download names."""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import unquote

# Above this size `upload()` sends the bytes straight to the object store (presigned POST)
# instead of through TaskFlow, when the server offers it.
PRESIGN_ABOVE_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class ProgressReader:
    """A binary file that reports how much of it has been read; rewinding starts the count again."""

    def __init__(self, file: IO[bytes], total: int, progress: Progress | None):
        self._file = file
        self.total = total
        self.done = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self.done += len(chunk)
        if self._progress and chunk:
            self._progress(min(self.done, self.total), self.total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        self.done = position
        return position

    def tell(self) -> int:
        return self._file.tell()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK_BYTES):
            yield chunk


class Source:
    """What to upload: a path or an open binary file, with its name, size and content type."""

    def __init__(self, source: str | os.PathLike[str] | IO[bytes], name: str | None, content_type: str | None):
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            self.file: IO[bytes] = path.open("rb")
            self.owned = True
            self.name = name or path.name
        else:
            if isinstance(source.read(0), str):
                raise TypeError("open the file in binary mode ('rb')")
            self.file = source
            self.owned = False
            self.name = name or Path(str(getattr(source, "name", "upload.bin"))).name
        # The whole file is sent (httpx rewinds a file to its start before sending it).
        self.size = self.file.seek(0, os.SEEK_END)
        self.file.seek(0)
        self.content_type = content_type or mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    def reader(self, progress: Progress | None) -> IO[bytes]:
        # Duck-typed: httpx reads, seeks and tells, which is all a multipart part needs.
        return cast(IO[bytes], ProgressReader(self.file, self.size, progress))

    def close(self) -> None:
        if self.owned:
            self.file.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)")
_FILENAME = re.compile(r'filename\s*=\s*"?([^";]+)"?')


def download_name(content_disposition: str | None, fallback: str) -> str:
    """The server's file name from Content-Disposition, reduced to a bare name (no directories)."""
    name = ""
    if content_disposition:
        match = _FILENAME_STAR.search(content_disposition)
        if match:
            name = unquote(match.group(1))
        elif match := _FILENAME.search(content_disposition):
            name = match.group(1)
    name = Path(name.replace("\\", "/")).name.strip()
    return name if name not in ("", ".", "..") else fallback


def is_redirect(status: int) -> bool:
    return status in (301, 302, 303, 307, 308)
