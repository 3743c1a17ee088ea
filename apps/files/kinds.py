"""Task kinds that process stored files: checksums and CSV reports, streamed, never loaded whole."""

import csv
import hashlib
import io
import json
import math
from collections import Counter

from rest_framework import serializers

from apps.tasks.registry import PermanentError, task_kind

from .fields import StoredFileField
from .models import StoredFile

CHUNK_BYTES = 1024 * 1024
# Distinct values tracked per column for "top values"; past it the counts are a sample.
MAX_DISTINCT_VALUES = 10_000
NULL_MARKERS = {"", "null", "none", "na", "n/a", "nan"}


class ChecksumPayload(serializers.Serializer):
    file = StoredFileField()


@task_kind("files.checksum", payload=ChecksumPayload, queue="default", max_retries=3, timeout=3600)
def checksum(ctx, payload):
    """Streams a file and computes its SHA-256 and MD5; fills in the file's sha256 if it has none."""
    stored_file = payload["file"]
    sha256, md5, done = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with ctx.open_input(stored_file) as stream:
        while chunk := stream.read(CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
            done += len(chunk)
            ctx.progress(100 * done / max(stored_file.size, 1), f"{done:,} of {stored_file.size:,} bytes")
            ctx.check_cancelled()
    if done != stored_file.size:
        raise PermanentError(f"The object has {done} bytes but the file records {stored_file.size}.")
    if not stored_file.sha256:
        StoredFile.objects.filter(pk=stored_file.pk, sha256="").update(sha256=sha256.hexdigest())
    elif stored_file.sha256 != sha256.hexdigest():
        raise PermanentError("The object's SHA-256 differs from the one recorded at upload: it was changed.")
    return {"file": str(stored_file.pk), "size": done, "sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


class CsvReportPayload(serializers.Serializer):
    file = StoredFileField()
    delimiter = serializers.ChoiceField(choices=[",", ";", "\t", "|"], default=",")
    top = serializers.IntegerField(min_value=1, max_value=50, default=5, help_text="Top values per column.")


class _Column:
    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.nulls = 0
        self.numeric = True
        self.minimum = math.inf
        self.maximum = -math.inf
        self.total = 0.0
        self.values: Counter = Counter()
        self.values_sampled = False

    def add(self, raw: str) -> None:
        value = raw.strip()
        if value.lower() in NULL_MARKERS:
            self.nulls += 1
            return
        self.count += 1
        if self.numeric:
            try:
                number = float(value)
            except ValueError:
                self.numeric = False
            else:
                if math.isfinite(number):
                    self.minimum, self.maximum = min(self.minimum, number), max(self.maximum, number)
                    self.total += number
                else:
                    self.numeric = False
        if value in self.values or len(self.values) < MAX_DISTINCT_VALUES:
            self.values[value] += 1
        else:
            self.values_sampled = True

    def report(self, top: int) -> dict:
        numeric = self.numeric and self.count > 0
        return {
            "name": self.name,
            "count": self.count,
            "nulls": self.nulls,
            "numeric": numeric,
            "min": self.minimum if numeric else None,
            "max": self.maximum if numeric else None,
            "mean": self.total / self.count if numeric else None,
            "top_values": [{"value": value, "count": n} for value, n in self.values.most_common(top)],
            "top_values_sampled": self.values_sampled,
        }


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from a stream, for progress by bytes."""

    def __init__(self, stream):
        self.stream = stream
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self.stream.read(len(buffer))
        self.bytes_read += len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _summary_csv(columns: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["column", "count", "nulls", "min", "max", "mean", "top_values"])
    for column in columns:
        top = "; ".join(f"{item['value']} ({item['count']})" for item in column["top_values"])
        writer.writerow(
            [column["name"], column["count"], column["nulls"], column["min"], column["max"], column["mean"], top]
        )
    return out.getvalue().encode()


@task_kind("files.csv_report", payload=CsvReportPayload, queue="default", max_retries=2, timeout=3600)
def csv_report(ctx, payload):
    """Profiles a CSV of any size: per column count, nulls, numeric min/max/mean, top values."""
    stored_file = payload["file"]
    with ctx.open_input(stored_file) as stream:
        counter = _CountingReader(stream)
        # utf-8-sig drops the byte-order mark spreadsheets like to write.
        text = io.TextIOWrapper(io.BufferedReader(counter, CHUNK_BYTES), encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=payload["delimiter"], strict=True)
        try:
            header = next(reader, None)
            if not header:
                raise PermanentError("The CSV is empty: line 1 should be a header row.")
            columns = [_Column(name.strip() or f"column_{i + 1}") for i, name in enumerate(header)]
            rows = 0
            for row in reader:
                if not row:
                    continue  # blank lines carry no data
                if len(row) != len(columns):
                    raise PermanentError(
                        f"Malformed CSV at line {reader.line_num}: expected {len(columns)} fields, found {len(row)}."
                    )
                for column, value in zip(columns, row, strict=True):
                    column.add(value)
                rows += 1
                if rows % 5000 == 0:
                    ctx.progress(95 * counter.bytes_read / max(stored_file.size, 1), f"{rows:,} rows")
                    ctx.check_cancelled()
        except csv.Error as exc:
            raise PermanentError(f"Malformed CSV at line {reader.line_num}: {exc}.") from None
        except UnicodeDecodeError as exc:
            raise PermanentError(f"The file is not UTF-8 text (byte {exc.start} of a chunk cannot be read).") from None

    report = [column.report(payload["top"]) for column in columns]
    stem = stored_file.download_name.rsplit(".", 1)[0]
    document = {"file": str(stored_file.pk), "name": stored_file.original_name, "rows": rows, "columns": report}
    report_file = ctx.save_output(
        f"{stem}.report.json", json.dumps(document, indent=2).encode(), content_type="application/json"
    )
    summary_file = ctx.save_output(f"{stem}.summary.csv", _summary_csv(report), content_type="text/csv")
    ctx.progress(100, f"{rows:,} rows profiled")
    return {
        "rows": rows,
        "columns": [column["name"] for column in report],
        "report_file": str(report_file.pk),
        "summary_file": str(summary_file.pk),
    }
