"""Domain errors: plain exceptions that the API answers in its one shape and the admin shows on forms."""

import pytest
from django import forms
from django.contrib.messages import get_messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import RequestFactory
from rest_framework import exceptions as drf
from rest_framework import serializers

from apps.core.admin_errors import errors_as_message, errors_on_form, form_errors_from
from apps.core.api_errors import api_exception_handler, field_validator
from apps.core.exceptions import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    ServiceUnavailable,
)


def answer(exc) -> tuple[int, dict]:
    response = api_exception_handler(exc, {})
    return response.status_code, response.data


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (NotFound(), 404, {"code": "not_found", "message": "Not found."}),
        (Forbidden(), 403, {"code": "permission_denied", "message": drf.PermissionDenied.default_detail}),
        (Conflict(), 409, {"code": "conflict", "message": "The object's current state does not allow this."}),
        (
            Conflict("A running task is reading this file."),
            409,
            {"code": "conflict", "message": "A running task is reading this file."},
        ),
        (PayloadTooLarge("Too big."), 413, {"code": "payload_too_large", "message": "Too big."}),
        (NotSupported("No S3.", code="presign_unavailable"), 501, {"code": "presign_unavailable", "message": "No S3."}),
        (ServiceUnavailable(), 503, {"code": "service_unavailable", "message": ServiceUnavailable.default_message}),
        (DomainError("Refused."), 400, {"code": "error", "message": "Refused."}),
    ],
)
def test_each_domain_error_is_answered_with_its_status_code_and_message(exc, status, error):
    assert answer(exc) == (status, {"error": error})


def test_invalid_input_is_a_400_with_the_first_message_and_every_field():
    exc = InvalidInput({"email": ["A user with this email address already exists."], "password": ["Too short."]})
    assert answer(exc) == (
        400,
        {
            "error": {
                "code": "invalid",
                "message": "email: A user with this email address already exists.",
                "fields": {"email": ["A user with this email address already exists."], "password": ["Too short."]},
            }
        },
    )


def test_invalid_input_about_the_whole_input_lands_under_non_field_errors():
    assert answer(InvalidInput("Not a public address."))[1] == {
        "error": {
            "code": "invalid",
            "message": "Not a public address.",
            "fields": {"non_field_errors": ["Not a public address."]},
        }
    }


def test_invalid_input_is_answered_exactly_as_drf_validation_error_was():
    fields = {"payload": {"rows": ["A whole number."]}, "tasks": {"0": {"kind": ["Unknown kind."]}}}
    assert answer(InvalidInput(fields)) == answer(drf.ValidationError(fields))


def test_domain_not_found_and_forbidden_answer_as_drf_own_did():
    assert answer(NotFound()) == answer(drf.NotFound())
    assert answer(Forbidden()) == answer(drf.PermissionDenied())


def test_domain_errors_keep_drf_detail_for_callers_that_read_it():
    assert Conflict("Busy.").detail == "Busy."
    assert InvalidInput({"name": ["Taken."]}).detail == {"name": ["Taken."]}


def test_a_field_validator_from_a_domain_check_reports_on_its_field():
    def public_only(value):
        if value.startswith("10."):
            raise InvalidInput("Not a public address.")

    class HostSerializer(serializers.Serializer):
        host = serializers.CharField(validators=[field_validator(public_only)])

    data = HostSerializer(data={"host": "10.0.0.1"})
    assert not data.is_valid()
    assert data.errors == {"host": ["Not a public address."]}


class ScheduleLikeForm(forms.Form):
    name = forms.CharField()
    payload = forms.CharField()


def test_invalid_input_goes_on_the_fields_it_names_and_the_rest_on_the_form():
    form = ScheduleLikeForm(data={"name": "nightly", "payload": "{}"})
    with errors_on_form(form):
        raise InvalidInput({"name": ["You already have a schedule with this name."], "cron": ["Bad minute."]})
    assert form.errors == {
        "name": ["You already have a schedule with this name."],
        "__all__": ["Bad minute."],
    }


def test_nested_field_errors_are_shown_with_their_path():
    form = ScheduleLikeForm(data={"name": "nightly", "payload": "{}"})
    form_errors_from(form, InvalidInput({"payload": {"rows": ["A whole number."]}}))
    assert form.errors == {"payload": ["rows: A whole number."]}


def test_other_domain_errors_go_on_the_named_field_or_the_whole_form():
    on_field = ScheduleLikeForm(data={"name": "nightly", "payload": "{}"})
    with errors_on_form(on_field, field="payload"):
        raise PayloadTooLarge("The payload is larger than 256 KB.")
    assert on_field.errors == {"payload": ["The payload is larger than 256 KB."]}
    whole = ScheduleLikeForm(data={"name": "nightly", "payload": "{}"})
    with errors_on_form(whole):
        raise Conflict("A running task cannot be retried.")
    assert whole.errors == {"__all__": ["A running task cannot be retried."]}


def test_nested_field_errors_keep_their_path_on_the_form():
    form = ScheduleLikeForm(data={"name": "nightly", "payload": "{}"})
    with errors_on_form(form):
        raise InvalidInput({"payload": {"rows": ["A whole number."]}})
    assert form.errors == {"payload": ["rows: A whole number."]}


def test_errors_that_are_not_domain_errors_are_not_swallowed():
    form = ScheduleLikeForm(data={"name": "nightly", "payload": "{}"})
    with pytest.raises(RuntimeError), errors_on_form(form):
        raise RuntimeError("a bug")


def test_a_domain_error_in_an_admin_action_becomes_an_error_message():
    request = RequestFactory().post("/admin/")
    request._messages = CookieStorage(request)
    with errors_as_message(request):
        raise Conflict("A succeeded task cannot be cancelled.")
    assert [(m.level_tag, m.message) for m in get_messages(request)] == [
        ("error", "A succeeded task cannot be cancelled.")
    ]
