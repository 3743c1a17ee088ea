"""The operator admin in a real headless Chromium (Debian's package), against a live server
and a real Celery worker. Screenshots go to artifacts/screenshots/."""

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from apps.core.models import AuditEntry
from apps.tasks import fairness, rollups, services
from apps.tasks.models import ConcurrencyLimit, Task, TaskStatus
from conftest import PASSWORD
from tests.support.processes import uvicorn_command, wait_for

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/apt-packages.txt)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses
    # ORM calls when it sees one; the tests' own database calls are synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def log_in(browser, live_server, user):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/tasks/task/")
    page.fill("#id_username", user.email)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/tasks/task/")
    return page


def screenshot(page, name: str):
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def failed_task(owner, celery_worker):
    """A task that really ran and failed; then its payload is fixed, so a retry succeeds."""
    task, _ = services.task_submit(
        owner=owner,
        spec=services.TaskSpec(kind="demo.fail", payload={"failures": 1}, title="Nightly invoice run", max_retries=0),
    )

    def failed():
        task.refresh_from_db()
        return task.status == TaskStatus.FAILED

    wait_for(failed, timeout=30, message="the demo task to fail")
    Task.objects.filter(pk=task.pk).update(payload={"failures": 0, "message": "demo failure"})
    return task


def test_an_operator_filters_failed_tasks_opens_one_and_retries_it_to_success(
    browser, live_server, operator, failed_task
):
    page = log_in(browser, live_server, operator)
    page.locator("#changelist-filter details[data-filter-title='status'] a", has_text="Failed").click()
    page.wait_for_url("**status__exact=failed**")
    assert page.locator("#result_list tbody tr").count() == 1
    screenshot(page, "01-operator-failed-tasks")

    page.click(f"#result_list a:has(code[title='{failed_task.pk}'])")
    page.wait_for_url(f"**/{failed_task.pk}/change/**")
    assert "DemoFailure: demo failure (attempt 1 of 1 failing)" in page.inner_text(".field-error_text")
    screenshot(page, "02-operator-failed-task-page")

    page.fill("#id_reason", "input fixed")
    page.click("button:has-text('Retry')")
    page.wait_for_selector("ul.messagelist li.success")
    assert "is now queued" in page.inner_text("ul.messagelist")

    def succeeded():
        page.reload()
        return page.locator(".field-status_column .tf-status-succeeded").count() == 1

    wait_for(succeeded, timeout=30, interval=0.5, message="the retried task to succeed in the page")
    history = page.inner_text("#timeline")
    assert "Retried by hand: input fixed" in history and "operator@example.com" in history
    screenshot(page, "03-operator-retried-task-succeeded")
    failed_task.refresh_from_db()
    assert failed_task.status == TaskStatus.SUCCEEDED and failed_task.result == {"succeeded_on_attempt": 1}


def test_a_viewer_sees_the_task_but_no_retry_button_and_no_bulk_actions(browser, live_server, viewer, failed_task):
    page = log_in(browser, live_server, viewer)
    assert page.locator("select[name=action]").count() == 0
    assert page.locator("text=Retry all matching").count() == 0
    page.goto(f"{live_server.url}/admin/tasks/task/{failed_task.pk}/change/")
    assert page.locator(".field-status_column .tf-status-failed").count() == 1
    assert page.locator("button:has-text('Retry')").count() == 0
    assert page.locator("text=Submit a copy").count() == 0
    screenshot(page, "04-viewer-task-page-without-buttons")


@pytest.fixture
def asgi_server(web_env, start_web):
    """The app as deployed for pages with a never-ending stream (the dashboard): the ASGI entry
    point under uvicorn, whose streams end as soon as the browser leaves. (The test server's
    WSGI thread would hold a stream, its slot and one of the process' two WSGI streams until
    its next write fails, into later tests.)"""
    return SimpleNamespace(url=start_web(web_env, uvicorn_command(), name="asgi").url(""))


def test_the_dashboard_shows_the_live_worker_and_pauses_its_refresh(browser, asgi_server, operator, failed_task):
    page = log_in(browser, asgi_server, operator)
    page.click("text=Dashboard")
    page.wait_for_selector("#worker-list", timeout=20_000)
    assert "worker-" in page.inner_text("#worker-list")
    assert page.locator("svg.tf-chart").count() == 2
    page.wait_for_function("document.getElementById('counts-state').textContent.startsWith('Counts live')")
    page.click("#refresh-toggle")
    assert page.inner_text("#refresh-state") == "Auto-refresh paused."
    screenshot(page, "05-dashboard")
    page.click("#refresh-toggle")  # leave the browser's storage as it was
    assert page.inner_text("#refresh-state") == "Other panels refreshed every 15 s."
    page.close()


def test_an_operator_picks_an_owner_in_the_filter_and_the_list_narrows_to_their_tasks(
    browser, live_server, operator, owner, other_user
):
    Task.objects.create(owner=owner, kind="demo.noop", title="Owner's export")
    theirs = Task.objects.create(owner=other_user, kind="demo.noop", title="Other's export")
    page = log_in(browser, live_server, operator)
    page.click("#changelist-filter .tf-owner-filter-form .select2-selection")
    page.fill(".select2-search__field", "other@")
    page.click(".select2-results__option:has-text('other@example.com')")
    page.wait_for_url(f"**owner={other_user.pk}**")
    assert page.locator("#result_list tbody tr").count() == 1
    assert page.locator(f"#result_list code[title='{theirs.pk}']").count() == 1
    assert "other@example.com" in page.inner_text("#changelist-filter .select2-selection")
    screenshot(page, "06-operator-owner-filter")


def test_a_running_tasks_page_moves_with_its_live_stream_without_reloading(
    browser, live_server, operator, owner, celery_worker
):
    task, _ = services.task_submit(
        owner=owner,
        spec=services.TaskSpec(kind="demo.sleep", payload={"seconds": 12, "steps": 12}, title="Long export"),
    )
    page = log_in(browser, live_server, operator)
    page.goto(f"{live_server.url}/admin/tasks/task/{task.pk}/change/")
    page.evaluate("window.tfNotReloaded = true")  # gone if the page reloads
    shown = page.evaluate("document.querySelector('.field-progress_column progress').value")
    # The bar moves past what the page was rendered with, and the page was not reloaded.
    page.wait_for_function(
        f"window.tfNotReloaded === true && document.querySelector('.field-progress_column progress').value > {shown}",
        timeout=60_000,
    )
    page.wait_for_function("document.querySelector('#tf-live-task').textContent.trim() === 'Live.'", timeout=60_000)
    assert page.inner_text(".field-progress_message .readonly").startswith("step ")
    assert page.locator("#timeline tr:has(.tf-status-running)").count() >= 1
    assert page.inner_text(".field-status_column .readonly").strip() == "Running"
    screenshot(page, "09-running-task-live-progress")
    # Final: the page reloads itself once, showing the result.
    page.wait_for_function("window.tfNotReloaded === undefined", timeout=60_000)
    page.wait_for_selector(".field-status_column .tf-status-succeeded")
    assert '"slept": 12' in page.inner_text(".field-result_json") and "succeeded" in page.inner_text("#timeline")
    page.close()


def test_an_operator_searches_by_payload_and_sees_how_many_failed_tasks_a_retry_would_take(
    browser, live_server, operator, owner
):
    for n in range(3):
        Task.objects.create(owner=owner, kind="demo.noop", title=f"Invoice {n}", status=TaskStatus.FAILED,
                            payload={"customer": 42, "invoice": n})  # fmt: skip
    Task.objects.create(owner=owner, kind="demo.noop", title="Invoice 3", status=TaskStatus.SUCCEEDED,
                        payload={"customer": 42, "invoice": 3})  # fmt: skip
    Task.objects.create(owner=owner, kind="demo.noop", title="Invoice 4", status=TaskStatus.FAILED,
                        payload={"customer": "42", "invoice": 4})  # fmt: skip
    page = log_in(browser, live_server, operator)
    assert "payload.customer=42" in page.inner_text("#changelist-search")  # the help under the box
    page.fill("#searchbar", "payload.customer=42")
    page.press("#searchbar", "Enter")
    page.wait_for_url("**q=payload.customer**")
    assert page.locator("#result_list tbody tr").count() == 4
    screenshot(page, "07-operator-payload-search")

    page.click("text=Retry all matching")
    page.wait_for_url("**/retry-matching/**")
    assert page.inner_text("#retry-count") == "3"
    assert "payload.customer=42" in page.inner_text("#content")
    screenshot(page, "08-operator-retry-matching-payload-search")
    assert Task.objects.filter(status=TaskStatus.FAILED).count() == 4  # a count only: nothing retried yet


def test_an_operator_holds_a_kind_sees_its_tasks_wait_then_raises_the_limit_and_they_run(
    browser, live_server, operator, owner, celery_worker
):
    page = log_in(browser, live_server, operator)
    page.goto(f"{live_server.url}/admin/tasks/concurrencylimit/add/")
    page.select_option("#id_scope", "kind")
    page.select_option("#id_kind", "demo.sleep")
    page.fill("#id_limit", "0")
    page.fill("#id_note", "held during the disk swap")
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")
    assert "held during the disk swap" in page.inner_text("#result_list")
    time.sleep(fairness.LIMITS_SEEN_FOR)  # the worker's claims read limits at most this old

    spec = services.TaskSpec(kind="demo.sleep", payload={"seconds": 2, "steps": 2})
    held = [services.task_submit(owner=owner, spec=spec)[0] for _ in range(2)]
    page.goto(f"{live_server.url}/admin/tasks/task/dashboard/")
    row = page.locator("#kind-limits tr", has_text="demo.sleep")
    assert "0 / 0" in row.inner_text() and "held" in row.inner_text()
    assert row.locator("td").nth(2).inner_text() == "2"  # both wait for a slot
    screenshot(page, "09-dashboard-kind-held")
    page.goto(f"{live_server.url}/admin/tasks/task/{held[0].pk}/change/")
    assert page.inner_text(".field-waiting_for").endswith("waiting for a slot: kind demo.sleep limit 0 reached")
    assert all(task.status == TaskStatus.QUEUED for task in Task.objects.filter(pk__in=[t.pk for t in held]))

    # Raise it to one: the save wakes one task at once, the second runs when the first is done.
    # The worker read the limit (0) when it dropped the two wake-ups; a wake-up it takes within
    # LIMITS_SEEN_FOR of that read is judged by the old limit and dropped too, left to the
    # reaper's re-dispatch, which this module does not run: let its copy age first.
    time.sleep(fairness.LIMITS_SEEN_FOR)
    limit = ConcurrencyLimit.objects.get(kind="demo.sleep")
    page.goto(f"{live_server.url}/admin/tasks/concurrencylimit/{limit.pk}/change/")
    page.fill("#id_limit", "1")
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")
    wait_for(
        lambda: Task.objects.filter(kind="demo.sleep", status=TaskStatus.RUNNING).exists(),
        timeout=20,
        message="the raised limit to let one task run",
    )
    page.goto(f"{live_server.url}/admin/tasks/task/dashboard/")
    row = page.locator("#kind-limits tr", has_text="demo.sleep")
    assert "1 / 1" in row.inner_text() and row.locator("td").nth(2).inner_text() == "1"
    screenshot(page, "10-dashboard-kind-at-limit")
    wait_for(
        lambda: Task.objects.filter(kind="demo.sleep", status=TaskStatus.SUCCEEDED).count() == 2,
        timeout=30,
        message="both tasks to run, one at a time",
    )
    starts = sorted(Task.objects.filter(kind="demo.sleep").values_list("started_at", "finished_at"))
    assert starts[1][0] >= starts[0][1]  # never two at once: the second started after the first finished
    assert [entry.action for entry in AuditEntry.objects.order_by("id")] == [
        "concurrency_limit.add",
        "concurrency_limit.change",
    ]


def test_the_dashboards_counts_follow_the_live_stream_without_reloading(
    browser, asgi_server, operator, owner, celery_worker
):
    page = log_in(browser, asgi_server, operator)
    page.click("text=Dashboard")
    page.wait_for_url("**/dashboard/")
    page.evaluate("window.tfNotReloaded = true")  # gone if the page reloads
    page.wait_for_function("document.getElementById('counts-state').textContent.startsWith('Counts live')")
    assert page.inner_text("#refresh-state") == "Other panels refreshed every 15 s."

    def shown(status: str, column: str) -> str:
        cell = f'#status-counts tr[data-status="{status}"] [data-column="{column}"]'
        return f"document.querySelector('{cell}').textContent"

    assert page.evaluate(shown("running", "live")) == "0"
    assert page.evaluate(shown("succeeded", "hour")) == "0"
    task, _ = services.task_submit(
        owner=owner, spec=services.TaskSpec(kind="demo.sleep", payload={"seconds": 4, "steps": 2}, title="Export")
    )
    # Submitted, then claimed by the worker: counted as running while it runs.
    page.wait_for_function(f"{shown('running', 'live')} === '1' && {shown('running', 'hour')} === '1'", timeout=20_000)
    screenshot(page, "11-dashboard-live-counts")

    def succeeded():
        task.refresh_from_db()
        return task.status == TaskStatus.SUCCEEDED

    wait_for(succeeded, timeout=30, message="the task to succeed")
    page.wait_for_function(f"{shown('running', 'live')} === '0'", timeout=20_000)
    # Finished tasks are counted from the rollups (beat refreshes them; here by hand).
    rollups.refresh()
    page.wait_for_function(f"{shown('succeeded', 'hour')} === '1'", timeout=20_000)
    assert page.evaluate("window.tfNotReloaded") is True
    page.close()


def test_without_its_stream_the_dashboard_reloads_every_15_seconds(browser, live_server, operator, settings):
    settings.STREAMS_PER_USER = 0  # every stream refused (a 429), as when none can be served
    page = log_in(browser, live_server, operator)
    page.click("text=Dashboard")
    page.wait_for_url("**/dashboard/")
    page.evaluate("window.tfNotReloaded = true")
    page.wait_for_function("document.getElementById('counts-state').textContent === 'Live counts unavailable.'")
    assert page.inner_text("#refresh-state") == "Refreshing every 15 s."
    page.wait_for_function("window.tfNotReloaded === undefined", timeout=30_000)
    page.wait_for_selector("#status-counts")
    page.close()
