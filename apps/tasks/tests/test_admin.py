"""The operators' task admin: list, filters, search, task page, buttons, bulk actions, audit."""

from datetime import timedelta

import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from apps.core.models import AuditEntry
from apps.core.pagination import EstimatedCountPaginator
from apps.tasks import bulk
from apps.tasks.models import Task, TaskEvent, TaskStatus
from tests.support.callbacks import besides_live_notices

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tasks_task_changelist")


def make_task(owner, **fields) -> Task:
    now = timezone.now()
    defaults = {"kind": "demo.noop", "title": "Nightly export", "status": TaskStatus.QUEUED, "queued_at": now}
    return Task.objects.create(owner=owner, **(defaults | fields))


def failed_task(owner, **fields) -> Task:
    now = timezone.now()
    defaults = {
        "kind": "demo.fail",
        "title": "Flaky upstream check",
        "status": TaskStatus.FAILED,
        "payload": {"failures": 1, "message": "demo failure"},
        "attempts": 1,
        "max_retries": 0,
        "error": "DemoFailure: demo failure (attempt 1 of 1 failing)",
        "traceback": 'Traceback (most recent call last):\n  File "kinds.py", line 53\nDemoFailure: demo failure',
        "started_at": now - timedelta(seconds=3),
        "finished_at": now - timedelta(seconds=1),
        "progress": 40,
    }
    return make_task(owner, **(defaults | fields))


def change_url(task) -> str:
    return reverse("admin:tasks_task_change", args=[task.pk])


def listed_ids(response) -> set[str]:
    return {str(task.pk) for task in response.context["cl"].result_list}


# --- The list --------------------------------------------------------------------------------


def test_changelist_shows_short_id_title_owner_status_attempts_progress_and_times(staff_client, owner):
    task = failed_task(owner, title="Invoice run")
    response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<code title="{task.pk}">{str(task.pk)[:8]}</code>' in html
    assert "Invoice run" in html and "demo.fail" in html
    assert owner.email in html
    assert 'class="tf-status tf-status-failed"' in html
    assert 'title="DemoFailure: demo failure (attempt 1 of 1 failing)"' in html  # the error as tooltip
    assert "1/1" in html  # attempts out of runs allowed
    assert '<progress class="tf-progress" value="40"' in html
    assert "2.00 s" in html  # run time
    assert "1 task" in html


def test_changelist_query_count_does_not_grow_with_the_page_size(staff_client, owner, other_user):
    make_task(owner)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(CHANGELIST).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for index in range(60):
        make_task(other_user if index % 2 else owner, status=TaskStatus.SUCCEEDED, progress=100)
    assert queries() == few


def test_changelist_runs_no_full_count_and_defers_the_heavy_columns(staff_client, owner):
    make_task(owner, payload={"big": "x" * 1000})
    with CaptureQueriesContext(connection) as captured:
        staff_client.get(CHANGELIST + "?status__exact=queued")
    task_queries = [q["sql"] for q in captured.captured_queries if '"tasks_task"' in q["sql"]]
    counts = [sql for sql in task_queries if "COUNT(" in sql.upper()]
    assert counts and all("LIMIT 10001" in sql for sql in counts)
    page_query = next(sql for sql in task_queries if "ORDER BY" in sql and "COUNT(" not in sql.upper())
    assert '"tasks_task"."payload"' not in page_query and '"tasks_task"."traceback"' not in page_query


def test_a_list_that_fits_on_one_page_is_still_fetched_with_a_limit(staff_client, owner):
    """Without the LIMIT, a prepared statement's generic plan for `status = $1` sorts the
    whole table (seconds at 10M rows, for a status with a handful of tasks)."""
    tasks = {make_task(owner, status=TaskStatus.RETRYING).pk for _ in range(3)}
    make_task(owner)
    with CaptureQueriesContext(connection) as captured:
        response = staff_client.get(CHANGELIST + "?status__exact=retrying")
    assert {task.pk for task in response.context["cl"].result_list} == tasks
    page_query = next(
        q["sql"] for q in captured.captured_queries if "ORDER BY" in q["sql"] and '"tasks_task"' in q["sql"]
    )
    assert page_query.rstrip().endswith("LIMIT 200")
    for _ in range(150):
        make_task(owner, status=TaskStatus.RETRYING)
    every = staff_client.get(CHANGELIST + "?status__exact=retrying&all=")
    assert len(every.context["cl"].result_list) == 153  # "Show all" still shows all (up to 200)


def test_the_has_error_filter_states_the_partial_index_predicate_literally(staff_client, owner):
    failing = failed_task(owner)
    make_task(owner)
    with connection.cursor() as cursor:  # the worst case a prepared statement can reach
        cursor.execute("SET plan_cache_mode = force_generic_plan")
    try:
        for _ in range(7):  # prepared after 5 runs
            with CaptureQueriesContext(connection) as captured:
                response = staff_client.get(CHANGELIST + "?has_error=yes")
            assert listed_ids(response) == {str(failing.pk)}
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET plan_cache_mode")
    task_queries = [q["sql"] for q in captured.captured_queries if '"tasks_task"' in q["sql"]]
    assert task_queries and all("NOT (tasks_task.error = '')" in sql for sql in task_queries)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=failed", {"failed"}),
        ("kind=demo.sleep", {"sleep"}),
        ("priority__exact=critical", {"critical"}),
        ("has_error=yes", {"failed"}),
        ("has_error=no", {"queued", "sleep", "critical", "old"}),
        ("created_within=1h", {"queued", "failed", "sleep", "critical"}),
        ("created_within=24h&kind=demo.noop&priority__exact=normal", {"queued"}),
    ],
)
def test_filters_narrow_the_list(staff_client, owner, query, expected):
    tasks = {
        "queued": make_task(owner),
        "failed": failed_task(owner),
        "sleep": make_task(owner, kind="demo.sleep"),
        "critical": make_task(owner, priority="critical"),
        "old": make_task(owner, status=TaskStatus.SUCCEEDED),
    }
    Task.objects.filter(pk=tasks["old"].pk).update(created_at=timezone.now() - timedelta(days=3))
    response = staff_client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    assert listed_ids(response) == {str(tasks[name].pk) for name in expected}


def test_owner_filter_takes_the_autocompleted_user_id(staff_client, owner, other_user):
    mine, theirs = make_task(owner), make_task(other_user)
    response = staff_client.get(f"{CHANGELIST}?owner={other_user.pk}")
    assert listed_ids(response) == {str(theirs.pk)}
    assert f'<option value="{other_user.pk}" selected>{other_user.email}</option>' in response.content.decode()
    assert str(mine.pk) not in listed_ids(response)


def test_owner_filter_is_djangos_autocomplete_select_fed_by_the_owner_search(staff_client, owner):
    make_task(owner)
    page = staff_client.get(CHANGELIST).content.decode()
    assert 'class="tf-owner-filter admin-autocomplete"' in page
    assert f'data-ajax--url="{reverse("admin:tasks_task_owners")}"' in page
    assert "admin/js/autocomplete.js" in page


def test_owner_autocomplete_pages_twenty_users_at_a_time_in_email_order(viewer_client, make_user):
    for n in range(21):
        make_user(f"page{n:02}@example.com")
    first = viewer_client.get(reverse("admin:tasks_task_owners"), {"term": "page"}).json()
    second = viewer_client.get(reverse("admin:tasks_task_owners"), {"term": "page", "page": 2}).json()
    assert [row["text"] for row in first["results"]] == [f"page{n:02}@example.com" for n in range(20)]
    assert first["pagination"] == {"more": True}
    assert second == {
        "results": [{"id": second["results"][0]["id"], "text": "page20@example.com"}],
        "pagination": {"more": False},
    }


def test_created_filter_takes_a_date_range(staff_client, owner):
    inside, outside = make_task(owner), make_task(owner)
    Task.objects.filter(pk=inside.pk).update(created_at=timezone.now().replace(2026, 3, 15, 12))
    Task.objects.filter(pk=outside.pk).update(created_at=timezone.now().replace(2026, 3, 20, 12))
    response = staff_client.get(f"{CHANGELIST}?created_from=2026-03-14&created_to=2026-03-15")
    assert listed_ids(response) == {str(inside.pk)}


def test_owner_autocomplete_finds_users_by_email_for_anyone_who_may_view_tasks(viewer_client, owner, other_user):
    response = viewer_client.get(reverse("admin:tasks_task_owners"), {"term": "oth"})
    assert response.json() == {
        "results": [{"id": str(other_user.pk), "text": "other@example.com"}],
        "pagination": {"more": False},
    }


@pytest.mark.parametrize("how", ["full id", "short id", "owner email", "title word"])
def test_search_finds_a_task_by_id_short_id_owner_email_or_title(staff_client, owner, other_user, how):
    target = make_task(other_user, title="Quarterly invoice batch")
    make_task(owner, title="Nightly export")
    term = {
        "full id": str(target.pk),
        "short id": str(target.pk)[:8],
        "owner email": "other@example",
        "title word": "invoice",
    }[how]
    response = staff_client.get(CHANGELIST, {"q": term})
    assert listed_ids(response) == {str(target.pk)}


def test_search_for_a_full_id_looks_the_primary_key_up(staff_client, owner):
    task = make_task(owner)
    with CaptureQueriesContext(connection) as captured:
        staff_client.get(CHANGELIST, {"q": str(task.pk)})
    page_sql = [q["sql"] for q in captured.captured_queries if '"tasks_task"' in q["sql"] and "ORDER BY" in q["sql"]]
    assert page_sql and all(f'"tasks_task"."id" = \'{task.pk.hex}\'::uuid' in sql for sql in page_sql)
    assert all("LIKE" not in sql for sql in page_sql)


def test_unfiltered_list_on_postgresql_counts_with_the_planner_estimate(staff_client, owner, monkeypatch):
    for _ in range(3):
        make_task(owner)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task")  # counts this transaction's rows as live
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_FROM", 1)
    with CaptureQueriesContext(connection) as captured:
        response = staff_client.get(CHANGELIST)
    paginator = response.context["cl"].paginator
    assert paginator.is_estimate and paginator.count == 3
    assert "about 3 tasks" in response.content.decode()
    assert any("reltuples" in q["sql"] for q in captured.captured_queries)
    assert not any("COUNT(" in q["sql"].upper() and '"tasks_task"' in q["sql"] for q in captured.captured_queries)


def test_filtered_list_stops_counting_at_the_cap_and_still_pages_on(staff_client, owner, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "COUNT_CAP", 3)
    for _ in range(5):
        failed_task(owner)
    response = staff_client.get(CHANGELIST + "?status__exact=failed&has_error=yes&p=1")
    html = response.content.decode()
    assert "more than 3 tasks" in html and "Select all more than 3 tasks" in html
    assert response.context["cl"].paginator.is_capped


def test_pages_past_a_capped_count_are_reachable(staff_client, owner, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "COUNT_CAP", 3)
    monkeypatch.setattr("apps.tasks.admin.TaskAdmin.list_per_page", 2)
    for _ in range(7):
        failed_task(owner)
    response = staff_client.get(CHANGELIST + "?status__exact=failed&p=4")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1
    assert staff_client.get(CHANGELIST + "?status__exact=failed&p=5").status_code == 302  # empty: back to page 1


# --- The task page ---------------------------------------------------------------------------


def test_task_page_is_read_only_with_pretty_json_traceback_and_the_history(staff_client, owner):
    task = failed_task(owner, result={"partial": [1, 2]})
    TaskEvent.objects.create(task=task, from_status="", to_status="queued", actor=owner, message="Submitted")
    TaskEvent.objects.create(task=task, from_status="running", to_status="failed", worker="celery@w1", message="Boom")
    response = staff_client.get(change_url(task))
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        '<pre class="tf-pre">{\n  &quot;failures&quot;: 1,\n  &quot;message&quot;: &quot;demo failure&quot;\n}</pre>'
        in html
    )
    assert '<pre class="tf-pre">{\n  &quot;partial&quot;: [\n    1,\n    2\n  ]\n}</pre>' in html
    assert '<pre class="tf-pre">Traceback (most recent call last):' in html
    assert '<progress class="tf-progress" value="40"' in html
    assert 'id="timeline"' in html and "owner@example.com" in html and "celery@w1" in html and "Boom" in html
    assert 'name="_save"' not in html  # read-only: no save button
    assert staff_client.post(change_url(task), {"status": "queued"}).status_code == 403


def test_task_page_lists_input_and_output_files_with_download_links(staff_client, owner, settings, tmp_path):
    from apps.files.services import stored_file_create
    from apps.tasks.models import TaskFile

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    task = failed_task(owner)
    source = stored_file_create(owner=owner, name="orders.csv", content=b"a,b\n1,2\n", content_type="text/csv")
    TaskFile.objects.create(task=task, file=source, role="input")
    html = staff_client.get(change_url(task)).content.decode()
    assert 'id="task-files"' in html and "orders.csv" in html and "Input" in html
    assert reverse("files:file-download", kwargs={"pk": source.pk}) in html


def test_task_page_shows_each_button_only_with_its_permission_and_state(client, owner, operator, viewer):
    failed, running = failed_task(owner), make_task(owner, status=TaskStatus.RUNNING)
    client.force_login(operator)
    failed_page = client.get(change_url(failed)).content.decode()
    running_page = client.get(change_url(running)).content.decode()
    assert ">Retry</button>" in failed_page and "Hard revoke" not in failed_page
    assert "Submit a copy" in failed_page
    assert ">Ask to stop</button>" in running_page and ">Hard revoke</button>" in running_page
    assert ">Retry</button>" not in running_page
    client.force_login(viewer)
    viewer_page = client.get(change_url(failed)).content.decode()
    assert "Retry</button>" not in viewer_page and "Submit a copy" not in viewer_page
    assert 'id="operator-actions"' not in viewer_page


def test_task_page_links_to_its_celery_result_when_there_is_one(operator_client, owner):
    task = failed_task(owner)
    assert "Celery result" not in operator_client.get(change_url(task)).content.decode()
    result = TaskResult.objects.create(task_id=str(task.pk), task_name="taskflow.run_task", status="SUCCESS")
    html = operator_client.get(change_url(task)).content.decode()
    assert reverse("admin:django_celery_results_taskresult_change", args=[result.pk]) in html


def test_operator_retries_a_failed_task_from_its_page_with_a_reason(operator_client, operator, owner):
    task = failed_task(owner)
    response = operator_client.post(reverse("admin:tasks_task_retry", args=[task.pk]), {"reason": "upstream fixed"})
    assert response.status_code == 302 and response.url == change_url(task)
    task.refresh_from_db()
    assert (task.status, task.attempts, task.error) == ("queued", 0, "")
    event = task.events.get(message="Retried by hand: upstream fixed")
    assert event.actor == operator
    audit = AuditEntry.objects.get()
    assert (audit.user, audit.action, audit.reason, audit.object_type) == (
        operator,
        "task.retry",
        "upstream fixed",
        "tasks.task",
    )
    assert (audit.object_count, audit.object_ids) == (1, [str(task.pk)])


def test_operator_cancels_a_queued_task_and_hard_revokes_a_running_one(operator_client, owner):
    queued, running = make_task(owner), make_task(owner, status=TaskStatus.RUNNING)
    operator_client.post(reverse("admin:tasks_task_cancel", args=[queued.pk]))
    operator_client.post(reverse("admin:tasks_task_revoke", args=[running.pk]), {"reason": "stuck"})
    queued.refresh_from_db()
    running.refresh_from_db()
    assert queued.status == running.status == "cancelled"
    assert running.events.filter(message="Hard-revoked: stuck").exists()
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "task.cancel",
        "task.hard_revoke",
    ]


def test_retrying_a_task_that_cannot_be_retried_says_why_and_changes_nothing(operator_client, owner):
    task = make_task(owner, status=TaskStatus.SUCCEEDED)
    response = operator_client.post(reverse("admin:tasks_task_retry", args=[task.pk]), follow=True)
    assert "Only failed or cancelled tasks can be retried; this one is succeeded." in response.content.decode()
    task.refresh_from_db()
    assert task.status == "succeeded"
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("button", ["retry", "cancel", "revoke", "copy"])
def test_a_viewers_forged_button_post_is_refused_and_changes_nothing(viewer_client, owner, button):
    task = failed_task(owner) if button in ("retry", "copy") else make_task(owner, status=TaskStatus.RUNNING)
    before = Task.objects.count(), task.status
    response = viewer_client.post(
        reverse(f"admin:tasks_task_{button}", args=[task.pk]),
        {"reason": "forged", "kind": "demo.noop", "priority": "normal", "payload": "{}"},
    )
    assert response.status_code == 403
    task.refresh_from_db()
    assert (Task.objects.count(), task.status) == before
    assert not AuditEntry.objects.exists()


def test_buttons_answer_only_to_post(operator_client, owner):
    task = failed_task(owner)
    assert operator_client.get(reverse("admin:tasks_task_retry", args=[task.pk])).status_code == 405


def test_submit_a_copy_starts_from_the_kind_and_payload(operator_client, owner):
    task = failed_task(owner)
    response = operator_client.get(reverse("admin:tasks_task_copy", args=[task.pk]))
    form = response.context["form"]
    assert form["kind"].value() == "demo.fail"
    assert '"failures": 1' in form["payload"].value()
    assert "owned by <strong>owner@example.com</strong>" in response.content.decode()


def test_submit_a_copy_creates_a_task_for_the_original_owner_with_the_edited_payload(operator_client, operator, owner):
    source = failed_task(owner)
    response = operator_client.post(
        reverse("admin:tasks_task_copy", args=[source.pk]),
        {
            "kind": "demo.fail",
            "title": "Second try",
            "priority": "high",
            "max_retries": "0",
            "payload": '{"failures": 0}',
            "reason": "payload fixed",
        },
    )
    copy = Task.objects.exclude(pk=source.pk).get()
    assert response.status_code == 302 and response.url == change_url(copy)
    assert (copy.owner, copy.kind, copy.title, copy.priority, copy.status) == (
        owner,
        "demo.fail",
        "Second try",
        "high",
        "queued",
    )
    assert copy.payload == {"failures": 0, "message": "demo failure"}  # validated by the kind
    assert copy.trigger == "admin"
    assert copy.description == f"Copy of task {source.pk}, submitted by operator@example.com: payload fixed"
    assert copy.events.get().actor == operator
    audit = AuditEntry.objects.get(action="task.copy")
    assert audit.details == {"source": str(source.pk), "copy": str(copy.pk), "kind": "demo.fail"}


def test_submit_a_copy_shows_the_kinds_payload_errors(operator_client, owner):
    source = failed_task(owner)
    response = operator_client.post(
        reverse("admin:tasks_task_copy", args=[source.pk]),
        {"kind": "demo.fail", "priority": "normal", "payload": '{"failures": -3}'},
    )
    assert response.status_code == 200
    assert "failures: Ensure this value is greater than or equal to 0." in response.content.decode()
    assert Task.objects.count() == 1


# --- Bulk actions ----------------------------------------------------------------------------


def run_action(client, action: str, tasks, **extra):
    data = {"action": action, "_selected_action": [str(task.pk) for task in tasks], "index": "0", **extra}
    return client.post(CHANGELIST, data)


def test_bulk_retry_retries_the_failed_and_cancelled_among_the_selected(operator_client, operator, owner):
    failed, cancelled = failed_task(owner), make_task(owner, status=TaskStatus.CANCELLED)
    succeeded = make_task(owner, status=TaskStatus.SUCCEEDED)
    response = run_action(operator_client, "retry_selected", [failed, cancelled, succeeded], reason="outage over")
    assert response.status_code == 302
    statuses = dict(Task.objects.values_list("pk", "status"))
    assert (statuses[failed.pk], statuses[cancelled.pk], statuses[succeeded.pk]) == ("queued", "queued", "succeeded")
    assert TaskEvent.objects.filter(message="Retried by hand: outage over", actor=operator).count() == 2
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.reason, audit.object_count) == ("task.bulk_retry", "outage over", 2)
    assert set(audit.object_ids) == {str(failed.pk), str(cancelled.pk)}
    assert audit.details == {"source": "selected", "mode": "inline", "done": 2, "skipped": 0}


def test_bulk_cancel_cancels_waiting_tasks_and_asks_running_ones_to_stop(operator_client, owner):
    queued, running = make_task(owner), make_task(owner, status=TaskStatus.RUNNING)
    done = make_task(owner, status=TaskStatus.SUCCEEDED)
    run_action(operator_client, "cancel_selected", [queued, running, done])
    queued.refresh_from_db()
    running.refresh_from_db()
    done.refresh_from_db()
    assert (queued.status, running.status, running.cancel_requested, done.status) == (
        "cancelled",
        "running",
        True,
        "succeeded",
    )
    assert AuditEntry.objects.get().action == "task.bulk_cancel"


def test_viewers_see_no_bulk_actions_and_a_forged_action_post_is_refused(viewer_client, owner):
    task = failed_task(owner)
    html = viewer_client.get(CHANGELIST).content.decode()
    assert 'name="action"' not in html and "Retry all matching" not in html
    response = run_action(viewer_client, "retry_selected", [task])
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.status == "failed" and not AuditEntry.objects.exists()


def test_operators_see_the_bulk_actions(operator_client, owner):
    failed_task(owner)
    html = operator_client.get(CHANGELIST).content.decode()
    assert 'value="retry_selected"' in html and 'value="cancel_selected"' in html
    assert 'value="delete_selected"' not in html  # retention deletes tasks, not the admin


def test_bulk_work_is_split_into_transactions_of_the_batch_size(owner, operator, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_SIZE", 2)
    tasks = [failed_task(owner) for _ in range(5)]
    with CaptureQueriesContext(connection) as captured:
        done, skipped = bulk.tasks_apply(action=bulk.RETRY, task_ids=[t.pk for t in tasks], actor=operator)
    assert (done, skipped) == (5, 0)
    # Each batch is read (and committed, outside a test) on its own: 2 + 2 + 1 ids.
    batch_reads = [q["sql"] for q in captured.captured_queries if 'ORDER BY "tasks_task"."id" ASC' in q["sql"]]
    assert len(batch_reads) == 3


def test_retry_matching_shows_how_many_tasks_the_filter_matches(operator_client, owner, other_user):
    for _ in range(3):
        failed_task(owner)
    failed_task(other_user)
    make_task(owner, status=TaskStatus.SUCCEEDED)
    response = operator_client.get(
        reverse("admin:tasks_task_retry_matching") + f"?status__exact=failed&owner={owner.pk}"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert '<strong id="retry-count">3</strong>' in html
    assert "status: <strong>Failed</strong>" in html and "owner: <strong>owner@example.com</strong>" in html
    assert Task.objects.filter(status="failed").count() == 4  # nothing done on GET


def test_retry_matching_retries_them_on_confirmation_with_the_reason(operator_client, operator, owner, other_user):
    mine = [failed_task(owner) for _ in range(3)]
    theirs = failed_task(other_user)
    url = reverse("admin:tasks_task_retry_matching") + f"?status__exact=failed&owner={owner.pk}"
    response = operator_client.post(url, {"reason": "bad deploy rolled back"})
    assert response.status_code == 302
    path, _, query = response.url.partition("?")
    assert (path, QueryDict(query)) == (CHANGELIST, QueryDict(f"status__exact=failed&owner={owner.pk}"))
    assert set(Task.objects.filter(pk__in=[t.pk for t in mine]).values_list("status", flat=True)) == {"queued"}
    theirs.refresh_from_db()
    assert theirs.status == "failed"
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.reason, audit.object_count) == ("task.bulk_retry", "bad deploy rolled back", 3)
    assert audit.details["source"] == f"filter: {query}"


def test_retry_matching_is_refused_to_viewers(viewer_client, owner):
    failed_task(owner)
    url = reverse("admin:tasks_task_retry_matching") + "?status__exact=failed"
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url, {"reason": "x"}).status_code == 403
    assert Task.objects.get().status == "failed"


def test_bulk_retry_beyond_the_threshold_is_handed_to_celery(
    operator, owner, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(bulk, "INLINE_MAX", 2)
    tasks = [failed_task(owner) for _ in range(3)]
    with django_capture_on_commit_callbacks() as callbacks:
        outcome = bulk.tasks_bulk_action(
            action=bulk.RETRY, queryset=Task.objects.all(), actor=operator, reason="night shift"
        )
    assert outcome.in_background and outcome.eligible == 3
    assert len(besides_live_notices(callbacks)) == 1  # one message of up to MESSAGE_SIZE ids, sent after commit
    assert set(Task.objects.values_list("status", flat=True)) == {"failed"}  # not yet
    request = AuditEntry.objects.get()
    assert request.details == {"source": "selected", "mode": "background", "messages": 1}

    # What the Celery task does with that message:
    done, skipped = bulk.tasks_apply_in_background(
        action=bulk.RETRY,
        task_ids=[str(task.pk) for task in tasks],
        actor_id=operator.pk,
        reason="night shift",
        audit_entry_id=request.pk,
        part=1,
        parts=1,
    )
    assert (done, skipped) == (3, 0)
    assert set(Task.objects.values_list("status", flat=True)) == {"queued"}
    finished = AuditEntry.objects.get(action="task.bulk_retry.finished")
    assert finished.details == {"request": request.pk, "part": 1, "parts": 1, "done": 3, "skipped": 0}


# --- Celery results --------------------------------------------------------------------------


def test_result_retry_sends_the_task_again_with_its_stored_arguments(
    client, operator, redis_client, django_capture_on_commit_callbacks
):
    from apps.tasks.tests.test_services import broker_messages

    result = TaskResult.objects.create(
        task_id="0b7c3a52-0000-4000-8000-000000000001",
        task_name="apps.accounts.tasks.send_welcome_email",
        task_args='"(12345,)"',
        task_kwargs='"{}"',
        status="FAILURE",
    )
    before = broker_messages(redis_client, "default")
    client.force_login(operator)
    response = client.post(
        reverse("admin:django_celery_results_taskresult_changelist"),
        {"action": "retry_results", "_selected_action": [result.pk], "index": "0"},
    )
    assert response.status_code == 302
    assert broker_messages(redis_client, "default") == before + 1
    # The message sits in one of the queue's priority lists; its headers name the task and args.
    keys = [key for key in redis_client.keys("default*") if redis_client.type(key) == b"list"]
    messages = [message for key in keys for message in redis_client.lrange(key, 0, -1)]
    assert any(b"apps.accounts.tasks.send_welcome_email" in m and b"[12345]" in m for m in messages)
    audit = AuditEntry.objects.get()
    assert (audit.action, audit.object_ids) == ("result.retry", [result.task_id])


def test_result_retry_skips_results_whose_arguments_were_truncated(client, operator):
    result = TaskResult.objects.create(
        task_id="0b7c3a52-0000-4000-8000-000000000002",
        task_name="apps.accounts.tasks.send_welcome_email",
        task_args="\"('a very long argument...', ...)\"",
        status="FAILURE",
    )
    client.force_login(operator)
    response = client.post(
        reverse("admin:django_celery_results_taskresult_changelist"),
        {"action": "retry_results", "_selected_action": [result.pk], "index": "0"},
        follow=True,
    )
    assert "Not retried: 0b7c3a52-0000-4000-8000-000000000002: its arguments were stored truncated" in (
        response.content.decode()
    )
    assert not AuditEntry.objects.exists()


def test_result_admin_lists_and_shows_results_to_viewers_without_the_retry(client, viewer):
    result = TaskResult.objects.create(task_id="r-1", task_name="taskflow.reap_stale_tasks", status="SUCCESS")
    client.force_login(viewer)
    listing = client.get(reverse("admin:django_celery_results_taskresult_changelist"))
    assert listing.status_code == 200 and "taskflow.reap_stale_tasks" in listing.content.decode()
    assert "retry_results" not in listing.content.decode()
    page = client.get(reverse("admin:django_celery_results_taskresult_change", args=[result.pk]))
    assert page.status_code == 200


def test_the_fast_result_list_renders_the_cells_djangos_own_would(staff_client, owner, other_user):
    from django.contrib.admin.templatetags.admin_list import results
    from django.test.html import parse_html

    from apps.core.admin_list import result_rows

    # Finished tasks only: a waiting or running one shows a clock that moves between renders.
    now = timezone.now()
    times = {"started_at": now - timedelta(seconds=5), "finished_at": now}
    make_task(owner, title="A <b>bold</b> title", status=TaskStatus.SUCCEEDED, progress=100, **times)
    failed_task(other_user)
    make_task(owner, status=TaskStatus.CANCELLED, progress=40, **times)
    changelist = staff_client.get(CHANGELIST).context["cl"]
    fast = [parse_html("".join(row)) for row in result_rows(changelist)]
    stock = [parse_html("".join(row)) for row in results(changelist)]
    assert len(fast) == 3 and fast == stock
