"""The Python client (clients/python) keeps up with the API's OpenAPI schema.

Fails when an operation of the schema has no client method (and is not listed below as left
out on purpose, with the reason), when a mapped method is missing from the sync or the async
client, or when a field of a response the client reads is missing from its typed model.
"""

import dataclasses
import inspect

import pytest
from drf_spectacular.generators import SchemaGenerator

from taskflow_client import AsyncTaskFlow, TaskFlow, errors, models

# operationId -> the client method that performs it (the same path on TaskFlow and AsyncTaskFlow).
OPERATIONS = {
    "auth_token_create": "auth.login",
    "auth_token_refresh_create": "auth.refresh",
    "auth_logout_create": "auth.logout",
    "auth_register_create": "auth.register",
    "auth_me_retrieve": "auth.me",
    "auth_me_partial_update": "auth.update_me",
    "auth_api_keys_list": "auth.api_keys",
    "auth_api_keys_create": "auth.create_api_key",
    "auth_api_keys_retrieve": "auth.get_api_key",
    "auth_api_keys_destroy": "auth.revoke_api_key",
    "tasks_list": "tasks.list",
    "tasks_create": "tasks.submit",
    "tasks_bulk_create": "tasks.bulk",
    "tasks_retrieve": "tasks.get",
    "tasks_events_list": "tasks.history",
    "tasks_events_stream": "tasks.events",
    "tasks_retry_create": "tasks.retry",
    "tasks_cancel_create": "tasks.cancel",
    "kinds_list": "kinds.list",
    "files_list": "files.list",
    "files_create": "files.upload",
    "files_presign_create": "files.upload",
    "files_complete_create": "files.upload",
    "files_retrieve": "files.get",
    "files_destroy": "files.delete",
    "files_download_retrieve": "files.download",
    "schedules_list": "schedules.list",
    "schedules_create": "schedules.create",
    "schedules_retrieve": "schedules.get",
    "schedules_update": "schedules.replace",
    "schedules_partial_update": "schedules.update",
    "schedules_destroy": "schedules.delete",
    "schedules_preview_list": "schedules.preview",
    "schedules_run_create": "schedules.run",
    "webhooks_list": "webhooks.list",
    "webhooks_create": "webhooks.create",
    "webhooks_retrieve": "webhooks.get",
    "webhooks_partial_update": "webhooks.update",
    "webhooks_destroy": "webhooks.delete",
    "webhooks_rotate_secret_create": "webhooks.rotate_secret",
    "webhooks_deliveries_list": "webhooks.deliveries",
    "webhook_deliveries_list": "webhooks.deliveries",
    "webhook_deliveries_retrieve": "webhooks.get_delivery",
    "webhook_deliveries_redeliver_create": "webhooks.redeliver",
    "webhooks_callback_secret_retrieve": "webhooks.callback_secret",
    "webhooks_callback_secret_create": "webhooks.callback_secret",
}

# Operations the client leaves out on purpose: operationId -> why.
NOT_COVERED: dict[str, str] = {
    "tasks_events_stream_all": "the owner-wide live stream serves dashboards and browsers (EventSource); "
    "a script follows the tasks it submitted with tasks.events() and tasks.wait()",
    "tasks_counts_stream": "the staff's live counts by status feed the admin dashboard (EventSource); "
    "nothing a script submits or waits for",
}

# Response schemas -> the model that reads them. Lists (Paginated*) are unwrapped to their items.
MODELS = {
    "Task": models.Task,
    "TaskList": models.Task,
    "TaskDetail": models.Task,
    "TaskFile": models.TaskFile,
    "TaskEvent": models.TaskEvent,
    "Kind": models.Kind,
    "StoredFile": models.File,
    "PresignOutput": models.PresignedUpload,
    "UploadTarget": models.UploadTarget,
    "Schedule": models.Schedule,
    "SchedulePreview": models.SchedulePreview,
    "User": models.User,
    "ApiKey": models.ApiKey,
    "ApiKeyCreated": models.ApiKey,
    "TokenObtainPair": models.Tokens,
    "TokenRefresh": models.Tokens,
    "Endpoint": models.WebhookEndpoint,
    "EndpointWithSecret": models.WebhookEndpoint,
    "Delivery": models.WebhookDelivery,
    "Attempt": models.DeliveryAttempt,
    "CallbackSecret": models.CallbackSecret,
}
# Envelopes the client opens itself: schema -> the keys it reads.
ENVELOPES = {"TaskBulkResult": {"tasks"}}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def resolve(schema, node):
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]], node["$ref"].rsplit("/", 1)[-1]
    return node, None


def referenced_models(schema, node, seen=None):
    """Every component schema a response reaches (through pages, arrays, allOf and properties)."""
    seen = set() if seen is None else seen
    node, name = resolve(schema, node)
    if name:
        if name in seen:
            return seen
        if not name.startswith("Paginated"):
            seen.add(name)
    for key in ("allOf", "oneOf", "anyOf"):
        for part in node.get(key, ()):
            referenced_models(schema, part, seen)
    if "items" in node:
        referenced_models(schema, node["items"], seen)
    for prop in node.get("properties", {}).values():
        referenced_models(schema, prop, seen)
    return seen


def method_of(client, dotted):
    target = client
    for part in dotted.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


def test_every_operation_has_a_client_method_or_a_reason(schema):
    ids = {operation["operationId"] for _, operation in operations(schema)}

    assert sorted(ids - OPERATIONS.keys() - NOT_COVERED.keys()) == [], "add these to the client and to OPERATIONS"
    assert sorted((OPERATIONS.keys() | NOT_COVERED.keys()) - ids) == [], "gone from the API: drop them here"
    assert not OPERATIONS.keys() & NOT_COVERED.keys()
    assert all(reason.strip() for reason in NOT_COVERED.values())


@pytest.mark.parametrize("client_class", [TaskFlow, AsyncTaskFlow])
def test_every_mapped_method_exists_on_both_clients(client_class):
    client = client_class("http://taskflow.invalid", api_key="contract")
    missing = [dotted for dotted in sorted(set(OPERATIONS.values())) if not callable(method_of(client, dotted))]
    assert missing == []
    if client_class is AsyncTaskFlow:
        sync = TaskFlow("http://taskflow.invalid", api_key="contract")
        for dotted in set(OPERATIONS.values()):
            sync_method, async_method = method_of(sync, dotted), method_of(client, dotted)
            same = inspect.signature(sync_method).parameters.keys() == inspect.signature(async_method).parameters.keys()
            assert same, f"{dotted} takes other arguments in the async client"


def test_every_response_field_is_in_the_clients_model(schema):
    drift = []
    for label, operation in operations(schema):
        if operation["operationId"] in NOT_COVERED:
            continue
        for status, response in operation.get("responses", {}).items():
            if not str(status).startswith("2"):
                continue
            for content in response.get("content", {}).values():
                for name in referenced_models(schema, content.get("schema", {})):
                    properties = set(schema["components"]["schemas"][name].get("properties", {}))
                    if name in ENVELOPES:
                        known = ENVELOPES[name]
                    elif name in MODELS:
                        known = MODELS[name].field_names()
                    elif not properties:  # enums and other plain values
                        continue
                    else:
                        drift.append(f"{label}: no client model for {name}")
                        continue
                    drift += [f"{label}: {name}.{field} missing" for field in sorted(properties - known)]
    assert drift == []


def test_the_error_shape_is_carried_by_the_exceptions(schema):
    detail = set(schema["components"]["schemas"]["ErrorDetail"]["properties"])
    quota = errors.QuotaExceeded("x", quota="tasks_not_final", limit=1, current=1, code="quota_exceeded")

    assert detail <= {name for name in dir(quota) if not name.startswith("_")}
    assert dataclasses.is_dataclass(models.Task)
