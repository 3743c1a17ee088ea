from datetime import UTC, datetime

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import connections, models
from django.utils.functional import cached_property
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

INVALID_CURSOR_MESSAGE = "This cursor is not one this list handed out; start again from the first page."


class CreatedCursorPagination(CursorPagination):
    """Newest first, stable under inserts, and no COUNT(*) on large tables."""

    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    page_size_query_description = f"Results per page: 1 to {max_page_size} (more is capped at {max_page_size})."

    def get_page_size(self, request):
        """DRF quietly falls back to the default for a page_size that is not a number; a
        client that sent one gets a 400 instead of a page of a size it did not ask for."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError({self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]})
        return min(int(raw), self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        self.model = queryset.model  # decode_cursor checks the position against its field
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        """A cursor that does not decode to a valid position is a 400 on `cursor`.

        DRF answers 404 for a cursor it cannot decode and hands any position it can straight
        to the database, where a position that is not a date (or a date PostgreSQL rejects)
        becomes a 500. Both are the client's mistake, so both are the same 400.
        """
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [INVALID_CURSOR_MESSAGE]}) from None
        if cursor is None or cursor.position is None:
            return cursor
        field = self.model._meta.get_field(self.ordering[0].lstrip("-"))
        position = _valid_position(field, cursor.position)
        if position is None:
            raise ValidationError({self.cursor_query_param: [INVALID_CURSOR_MESSAGE]})
        return cursor._replace(position=position)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters


def _valid_position(field: models.Field, raw: str):
    """The position as a value of the ordering field's type, or None when it is not one."""
    if "\x00" in raw:
        return None
    try:
        value = field.to_python(raw)
    except (DjangoValidationError, ValueError, TypeError, OverflowError):
        return None
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            # An offset can carry 0001-01-01 or 9999-12-31 past what datetime holds in UTC.
            value.astimezone(UTC)
        except (OverflowError, ValueError):
            return None
    elif isinstance(value, int) and not isinstance(value, bool):
        low, high = connections[field.model.objects.db].ops.integer_field_range(field.get_internal_type())
        if (low is not None and value < low) or (high is not None and value > high):
            return None
    return value


class EstimatedCountPaginator(Paginator):
    """An admin paginator for tables with millions of rows: it never runs a full COUNT(*).

    Unfiltered lists use PostgreSQL's planner estimate (`pg_class.reltuples`, kept fresh by
    autovacuum's ANALYZE); filtered lists count at most COUNT_CAP + 1 rows (a COUNT over a
    LIMIT subquery, served by the same index as the page). Small tables get exact counts.
    Pages past an inexact count stay reachable: a page is empty only when its rows are.
    """

    COUNT_CAP = 10_000
    # Below this estimate an exact count is cheap enough, and nicer to read.
    ESTIMATE_FROM = 50_000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_estimate = False
        self.is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where and connections[queryset.db].vendor == "postgresql":
            estimate = _planner_row_estimate(queryset.db, queryset.model._meta.db_table)
            if estimate >= self.ESTIMATE_FROM:
                self.is_estimate = True
                return estimate
        counted = queryset.order_by().values("pk")[: self.COUNT_CAP + 1].count()
        if counted > self.COUNT_CAP:
            self.is_capped = True
        return counted

    @property
    def is_exact(self) -> bool:
        self.count  # noqa: B018 (sets the flags)
        return not (self.is_estimate or self.is_capped)

    @property
    def count_display(self) -> str:
        """The count as people should read it: "about 1,000,000", "more than 10,000" or "42"."""
        if self.is_exact:
            return f"{self.count:,}"
        if self.is_capped:
            return f"more than {self.COUNT_CAP:,}"
        return f"about {self.count:,}"

    def validate_number(self, number):
        if self.is_exact:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number

    def page(self, number):
        number = self.validate_number(number)
        if self.is_exact:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page])
        if not rows and number > 1:
            raise EmptyPage("That page contains no results")
        return self._get_page(rows, number, self)


def _planner_row_estimate(alias: str, table: str) -> int:
    with connections[alias].cursor() as cursor:
        # reltuples is -1 for a table never analysed; treat that as "unknown" (count instead).
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row and row[0] is not None else 0
