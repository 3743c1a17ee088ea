"""Faster output for read-only serializers; the strict input contract; absolute links.

DRF builds a serializer's fields for every instance it creates: a deep copy of each declared
field, and for a ModelSerializer an introspection of the model for each of the others. For
the task representation (30 fields) that was a fifth of a `POST /api/tasks/` request, more
than rendering the task. `CachedFieldsMixin` builds the fields once per serializer class and
reuses them for every representation; the output is DRF's own, field by field. Kept for what
it measures (bench.profile_api, DRF's own to_representation instead, same run): 20-28 % more
CPU per `POST /api/tasks/` and per `GET /api/tasks/` (20 rows) without it.

`StrictSerializer` is the base of every API input serializer: a field it does not accept is
a 400 naming it, never silently dropped. `absolute_url` makes every link the API returns
absolute.
"""

import operator
import threading
from collections.abc import Mapping

from django.conf import settings
from django.http import QueryDict
from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject, RelatedField
from rest_framework.settings import api_settings

_build_lock = threading.Lock()


def _shareable(field) -> bool:
    """Fields whose to_representation reads nothing but the value and their own settings
    (no request, no parent, no nested serializer), so that one instance can serve every
    serializer instance, in every thread."""
    return not isinstance(
        field, serializers.BaseSerializer | RelatedField | serializers.ManyRelatedField | serializers.HiddenField
    )


def _iso_datetime(field):
    """DateTimeField.to_representation for its default ISO 8601 output of aware values."""
    if (
        not settings.USE_TZ
        or getattr(field, "format", api_settings.DATETIME_FORMAT) != ISO_8601
        or hasattr(field, "timezone")
    ):
        return field.to_representation

    def render(value):
        if value.tzinfo is None:
            return field.to_representation(value)
        return _iso_text(value, timezone.get_current_timezone())

    render.in_zone = lambda value, zone: (
        field.to_representation(value) if value.tzinfo is None else _iso_text(value, zone)
    )
    return render


def _iso_text(value, zone) -> str:
    """DRF's ISO 8601 text of an aware datetime in `zone` (UTC written as Z)."""
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _choice(field):
    mapping = field.choice_strings_to_values
    return lambda value: value if value == "" else mapping.get(str(value), value)


# DRF's own to_representation of the plainest fields, without its per-call overhead (the
# equivalence is pinned by apps/tasks/tests/test_serializers.py); any other field renders
# itself. Exact classes only: a subclass may render differently.
_FAST = {
    serializers.CharField: lambda field: str,
    serializers.EmailField: lambda field: str,
    serializers.URLField: lambda field: str,
    serializers.IntegerField: lambda field: int,
    serializers.BooleanField: lambda field: bool,
    serializers.UUIDField: lambda field: str if field.uuid_format == "hex_verbose" else field.to_representation,
    serializers.JSONField: lambda field: field.to_representation if field.binary else None,
    serializers.ChoiceField: _choice,
    serializers.DateTimeField: _iso_datetime,
}


def _renderer(field):
    """(getter, converter) of a shareable field; converter None: the value as it is."""
    make = _FAST.get(type(field))
    converter = make(field) if make else field.to_representation
    if len(field.source_attrs) == 1 and field.source != "*":
        return operator.attrgetter(field.source_attrs[0]), converter
    return field.get_attribute, converter


class CachedFieldsMixin:
    """For serializers used for output only, whose fields are the same for every instance and
    request (no get_fields() that depends on the context). Method fields (`get_<name>`) are called on the
    serializer at hand, so they may use its context; any other field that is not shareable
    (a nested serializer, a related field) makes the class use DRF's own path. The plainest
    fields are read with one getattr and converted as DRF would (_FAST)."""

    @classmethod
    def _representation_plan(cls):
        plan = cls.__dict__.get("_cached_plan")
        if plan is None:
            with _build_lock:
                plan = cls.__dict__.get("_cached_plan")
                if plan is None:
                    plan = cls._build_plan()
                    cls._cached_plan = plan
        return plan

    @classmethod
    def _build_plan(cls):
        prototype = cls(context={})
        plan = []
        # The public `fields`, as DRF's own private `_readable_fields` reads them.
        readable = [field for field in prototype.fields.values() if not field.write_only]
        for field in readable:
            if isinstance(field, serializers.SerializerMethodField):
                plan.append((field.field_name, None, field.method_name))
            elif _shareable(field):
                plan.append((field.field_name, field, _renderer(field)))
            else:
                return None  # DRF's path for this class
        return plan

    def to_representation(self, instance):
        plan = self._representation_plan()
        if plan is None:
            return super().to_representation(instance)
        representation = {}
        for name, field, how in plan:
            if field is None:
                representation[name] = getattr(self, how)(instance)
                continue
            getter, converter = how
            try:
                attribute = getter(instance)
            except SkipField:
                continue
            except (AttributeError, KeyError):
                try:
                    attribute = field.get_attribute(instance)  # DRF's defaults and errors
                except SkipField:
                    continue
            if attribute is None or (isinstance(attribute, PKOnlyObject) and attribute.pk is None):
                representation[name] = None
            else:
                representation[name] = attribute if converter is None else converter(attribute)
        return representation

    # --- Rows: QuerySet.values() dicts rendered without model instances ---

    @classmethod
    def row_plan(cls):
        """(the columns to read with QuerySet.values(), the plan of render_rows), built once per class.

        A field with one source attribute reads its column, `owner.email` reads `owner__email`;
        a method field `get_<name>` needs a `get_<name>_from_row(row)` beside it, reading the
        columns the class lists in `row_columns`. A class whose fields cannot all be read
        from rows raises TypeError: its representation needs model instances."""
        plan = cls.__dict__.get("_cached_row_plan")
        if plan is None:
            # Built from the fields' plan, which takes the build lock itself; two threads
            # building the same plan at once build equal ones.
            plan = cls._cached_row_plan = cls._build_row_plan()
        return plan

    @classmethod
    def _build_row_plan(cls):
        fields_plan = cls._representation_plan()
        if fields_plan is None:
            raise TypeError(f"{cls.__name__} has fields that need model instances")
        columns, steps = list(getattr(cls, "row_columns", ())), []
        for name, field, how in fields_plan:
            if field is None:
                method = getattr(cls, f"{how}_from_row", None)
                if method is None:
                    raise TypeError(f"{cls.__name__}.{how} has no {how}_from_row")
                steps.append((name, None, method, False))
                continue
            if field.source == "*":
                raise TypeError(f"{cls.__name__}.{name} renders the whole object")
            column = "__".join(field.source_attrs)
            converter = how[1]
            in_zone = getattr(converter, "in_zone", None)
            steps.append((name, column, in_zone or converter, in_zone is not None))
            if column not in columns:
                columns.append(column)
        return tuple(columns), tuple(steps)

    def render_rows(self, rows) -> list[dict]:
        """What `to_representation` makes of each instance, from the values() dicts of the
        instances' rows (columns: `row_plan()[0]`). Pinned against DRF's own output by
        apps/tasks/tests/test_serializers.py. The current time zone is looked up once."""
        steps = self.row_plan()[1]
        zone = timezone.get_current_timezone()
        rendered = []
        for row in rows:
            representation = {}
            for name, column, converter, zoned in steps:
                if column is None:
                    representation[name] = converter(self, row)
                    continue
                value = row[column]
                if value is None or converter is None:
                    representation[name] = value
                elif zoned:
                    representation[name] = converter(value, zone)
                else:
                    representation[name] = converter(value)
            rendered.append(representation)
        return rendered


# --- A strict input contract ------------------------------------------------------------------

UNKNOWN_FIELD = "Unknown field."
READ_ONLY_FIELD = "Read-only field: it cannot be set."
# Form bodies (multipart uploads from a browser session) carry Django's CSRF token beside the
# data; CsrfViewMiddleware reads it, so it is not an unknown field.
_FORM_ONLY_KEYS = frozenset({"csrfmiddlewaretoken"})


def unknown_field_errors(serializer: serializers.Serializer, data) -> dict:
    """{key: [message]} for every key of `data` that `serializer` does not accept as input.

    A key it does not declare is unknown; a declared read-only one (e.g. `id`) cannot be set.
    Either way a client's typo or wrong idea must not pass as if the field were absent. Nested
    serializers are checked too, unless they are strict themselves (they report their own).
    """
    if not isinstance(data, Mapping):
        return {}  # DRF's own "expected a dictionary" error covers it
    fields = serializer.fields
    accepted = ", ".join(name for name, field in fields.items() if not field.read_only) or "none"
    errors = {}
    for key in data:
        if key in _FORM_ONLY_KEYS and isinstance(data, QueryDict):
            continue
        field = fields.get(key)
        if field is None or isinstance(field, serializers.HiddenField):
            errors[key] = [f"{UNKNOWN_FIELD} Accepted fields: {accepted}."]
        elif field.read_only:
            errors[key] = [READ_ONLY_FIELD]
        elif isinstance(field, serializers.Serializer) and not isinstance(field, StrictInputMixin):
            nested = unknown_field_errors(field, data[key])
            if nested:
                errors[key] = nested
        elif (
            isinstance(field, serializers.ListSerializer)
            and not isinstance(field.child, StrictInputMixin)
            and isinstance(data[key], list)
        ):
            nested = {
                str(index): item_errors
                for index, item in enumerate(data[key])
                if (item_errors := unknown_field_errors(field.child, item))
            }
            if nested:
                errors[key] = nested
    return errors


class StrictInputMixin:
    """Input serializers refuse fields they do not accept (400 naming each), with the other
    errors of the same body. Every API input serializer is one (`StrictSerializer`)."""

    def to_internal_value(self, data):
        unknown = unknown_field_errors(self, data)
        if not unknown:
            return super().to_internal_value(data)
        try:
            super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                unknown = {**exc.detail, **unknown}
        raise serializers.ValidationError(unknown)


class StrictSerializer(StrictInputMixin, serializers.Serializer):
    """The base of every API input serializer: unknown and read-only fields are a 400."""


_prebuilt = threading.local()


def validated_data(serializer_class: type[serializers.Serializer], data) -> dict:
    """What `serializer_class(data=data).is_valid(raise_exception=True)` validates to, or its
    ValidationError, without building the serializer's fields for the call.

    DRF deep-copies every declared field into each serializer instance it creates; for the
    submit serializer that was a tenth of a `POST /api/tasks/`. Here each thread builds one
    instance of the class and validates through DRF's public `run_validation()`, which keeps
    nothing of a call on the instance (errors and values are returned or raised). For input
    serializers whose validation reads no context, instance or partial flag.
    """
    serializers_here = _prebuilt.__dict__.setdefault("by_class", {})
    serializer = serializers_here.get(serializer_class)
    if serializer is None:
        serializer = serializers_here[serializer_class] = serializer_class()
    return serializer.run_validation(data)


def absolute_url(context: dict, path: str) -> str:
    """`path` as an absolute URL for the request in a serializer's context.

    Without a request (a serializer used outside a view) the path is all there is to give."""
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


class ReasonSerializer(StrictSerializer):
    """The body of a POST action on an object: why, for the audit trail of staff actions."""

    reason = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why: recorded in the audit trail when a staff member does it.",
    )
