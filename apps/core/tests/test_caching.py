"""Cheap polling: ETag/If-None-Match on the task detail, never a stale status; the kinds list cached."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from apps.files.models import StoredFile
from apps.tasks import services
from apps.tasks.models import Task, TaskFile, TaskFileRole, TaskStatus

pytestmark = pytest.mark.django_db


def make_task(owner, **fields) -> Task:
    defaults = {"kind": "demo.noop", "status": TaskStatus.QUEUED, "queued_at": timezone.now(), "max_retries": 0}
    return Task.objects.create(owner=owner, **(defaults | fields))


def detail(client, task, etag=None):
    headers = {"HTTP_IF_NONE_MATCH": etag} if etag else {}
    return client.get(f"/api/tasks/{task.id}/", **headers)


def test_task_detail_sends_an_etag_and_answers_304_to_it_with_one_query(owner, owner_api, django_assert_num_queries):
    task = make_task(owner)
    first = detail(owner_api, task)
    assert first.status_code == 200
    etag = first["ETag"]
    assert etag.startswith('W/"')
    with django_assert_num_queries(1):  # the tag's columns; nothing is serialized
        again = detail(owner_api, task, etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag


def test_the_etag_changes_with_every_state_change_so_a_poll_never_sees_a_stale_task(owner, owner_api):
    task = make_task(owner)
    queued_etag = detail(owner_api, task)["ETag"]
    run = services.task_claim(task_id=task.pk, worker="w1")
    running = detail(owner_api, task, queued_etag)
    assert running.status_code == 200
    assert running.json()["status"] == "running"
    services.task_report_progress(task=run, progress=40, message="almost")
    progressed = detail(owner_api, task, running["ETag"])
    assert progressed.status_code == 200
    assert progressed.json()["progress"] == 40


def test_a_sweep_that_leaves_updated_at_alone_still_changes_the_etag(owner, owner_api):
    task = make_task(owner, status=TaskStatus.PENDING, queued_at=None, run_at=timezone.now() + timedelta(seconds=5))
    pending = detail(owner_api, task)
    updated_at = Task.objects.get(pk=task.pk).updated_at
    assert services.dispatch_due_tasks(now=timezone.now()) == 1  # pending -> queued, by bulk_update
    assert Task.objects.get(pk=task.pk).updated_at > updated_at  # the sweep stamps updated_at...
    Task.objects.filter(pk=task.pk).update(updated_at=updated_at)  # ...but the tag must not rely on it
    queued = detail(owner_api, task, pending["ETag"])
    assert queued.status_code == 200
    assert queued.json()["status"] == "queued"


def test_an_output_file_linked_while_the_task_runs_changes_the_etag(owner, owner_api):
    task = make_task(owner, status=TaskStatus.RUNNING)
    before = detail(owner_api, task)["ETag"]
    stored = StoredFile.objects.create(
        owner=owner, file="x/report.csv", original_name="report.csv", size=3, content_type="text/csv", state="ready"
    )
    TaskFile.objects.create(task=task, file=stored, role=TaskFileRole.OUTPUT)
    after = detail(owner_api, task, before)
    assert after.status_code == 200
    assert [link["name"] for link in after.json()["files"]] == ["report.csv"]


def test_another_users_task_is_a_404_even_with_its_etag(owner, owner_api, other_api):
    task = make_task(owner)
    etag = detail(owner_api, task)["ETag"]
    assert detail(other_api, task, etag).status_code == 404
    assert detail(other_api, task).status_code == 404


def test_a_malformed_task_id_is_a_404_with_or_without_an_etag(owner_api):
    assert owner_api.get("/api/tasks/not-a-uuid/", HTTP_IF_NONE_MATCH='W/"x"').status_code == 404


def test_the_kinds_list_is_cached_once_for_staff_and_once_for_everyone_else(owner_api, staff_api):
    cache.delete_many(["tasks:kinds:user", "tasks:kinds:staff"])
    user_kinds = {kind["name"] for kind in owner_api.get("/api/kinds/").json()}
    staff_kinds = {kind["name"] for kind in staff_api.get("/api/kinds/").json()}
    assert "demo.crash" in staff_kinds and "demo.crash" not in user_kinds
    assert {kind["name"] for kind in cache.get("tasks:kinds:user")} == user_kinds
    assert {kind["name"] for kind in cache.get("tasks:kinds:staff")} == staff_kinds
    # Served from the cache while the entry lives.
    cache.set("tasks:kinds:user", [{"name": "from.cache"}], 30)
    assert owner_api.get("/api/kinds/").json() == [{"name": "from.cache"}]
    assert "demo.crash" in {kind["name"] for kind in staff_api.get("/api/kinds/").json()}
    cache.delete_many(["tasks:kinds:user", "tasks:kinds:staff"])


def test_the_kinds_list_is_served_when_the_cache_is_unreachable(owner_api, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    response = owner_api.get("/api/kinds/")
    assert response.status_code == 200
    assert "demo.noop" in {kind["name"] for kind in response.json()}
