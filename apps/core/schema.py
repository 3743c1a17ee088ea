"""OpenAPI: every operation documents the errors it can answer, in the one error shape.

drf-spectacular documents only the success responses; a client generated from such a
schema (and schemathesis' conformance checks) would not know that a 404 or a 429 is an
answer of the API rather than a failure. The statuses are those of apps/core/api_errors.py
and DRF's own: see DESIGN "Errors are JSON with a stable shape and the right status".

Request bodies of strict input serializers (all of them) say `additionalProperties: false`:
a field they do not declare is a 400, and the schema tells clients and generators so.
"""

from drf_spectacular import openapi
from drf_spectacular.plumbing import force_instance
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from .serializers import StrictInputMixin

BODY_METHODS = ("POST", "PUT", "PATCH")

ERRORS = {
    "400": "Invalid input: `fields` names each field and what is wrong with it.",
    "401": "Not authenticated, or the credentials are invalid or expired.",
    "403": "Authenticated, but not allowed to do this: e.g. staff changing another user's object "
    "without the matching permission (staff may read every object).",
    "404": "No such object, or it belongs to another user.",
    "409": "The object's current state does not allow this.",
    "413": "The request body (or the file) is too large.",
    "415": "The request body's content type is not accepted here.",
    "429": "Too many requests: wait for the seconds in Retry-After; or, with `code` "
    "`quota_exceeded`, too many of your tasks are not final yet (`quota`, `limit`, `current`).",
    "503": "A service TaskFlow depends on is unavailable; try again shortly.",
}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: `invalid`, `not_found`, `conflict`, ...")
    message = serializers.CharField(help_text="For people; the first field error for `invalid`.")
    fields = serializers.DictField(required=False, help_text="`invalid` only: the errors of each field.")
    quota = serializers.CharField(required=False, help_text="`quota_exceeded` only: which quota was reached.")
    limit = serializers.IntegerField(required=False, help_text="`quota_exceeded` only: the quota's figure.")
    current = serializers.IntegerField(required=False, help_text="`quota_exceeded` only: what you hold now.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class AutoSchema(openapi.AutoSchema):
    def _error_codes(self) -> list[str]:
        codes = ["401", "403", "404", "429", "503"]
        if self.method != "DELETE":
            codes.append("400")
        if self.method in BODY_METHODS or self.method == "DELETE":
            codes.append("409")
        if self.method in BODY_METHODS:
            codes += ["413", "415"]
        return sorted(codes)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction=direction)
        for code in self._error_codes():
            if code not in responses:
                error = OpenApiResponse(ErrorSerializer, description=ERRORS[code])
                responses[code] = self._get_response_for_code(error, code, ["application/json"], direction)
        return responses

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(force_instance(serializer), StrictInputMixin):
            schema["additionalProperties"] = False
        return schema
