"""The dashboard's concurrency limits panel and fair-sharing line, and the selector behind them
(and the admin's list of limits), on the real database and the test Redis."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from apps.tasks import dashboard, limit_services, selectors
from apps.tasks.models import ConcurrencyLimit, LimitScope, Task, TaskStatus

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:tasks_dashboard")


@pytest.fixture(autouse=True)
def fresh_dashboard_cache():
    cache.delete(dashboard.LIMITS_KEY)
    yield
    cache.delete(dashboard.LIMITS_KEY)


def limit(**fields) -> ConcurrencyLimit:
    return ConcurrencyLimit.objects.create(**fields)


def task(owner, kind="demo.sleep", status=TaskStatus.QUEUED, **fields) -> Task:
    times = {"queued_at": timezone.now()} if status == TaskStatus.QUEUED else {}
    if status == TaskStatus.RUNNING:
        times = {"started_at": timezone.now()}
    return Task.objects.create(owner=owner, kind=kind, status=status, **(times | fields))


@pytest.fixture
def busy(owner, other_user, django_user_model):
    """demo.sleep at its limit (2 of 2, 3 waiting); the owner at the default (1) with 3 waiting;
    the other user under a limit of their own (1 of 3, 4 waiting); a third owner with waiting work."""
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=2)
    limit(scope=LimitScope.EVERY_OWNER, limit=1)
    limit(scope=LimitScope.OWNER, owner=other_user, limit=3)
    for _ in range(2):
        task(owner, status=TaskStatus.RUNNING)
    for _ in range(3):
        task(owner)
    task(other_user, kind="demo.noop", status=TaskStatus.RUNNING)
    for _ in range(4):
        task(other_user, kind="demo.noop")
    third = django_user_model.objects.create(email="third@example.com")
    task(third, kind="demo.noop")
    task(third, kind="demo.noop", status=TaskStatus.RETRYING, run_at=timezone.now() + timedelta(hours=1))
    return third


def test_the_overview_counts_running_and_waiting_per_limited_scope(busy, owner, other_user):
    overview = selectors.limits_overview(now=timezone.now())
    assert overview.kinds == {"demo.sleep": selectors.ScopeUse(limit=2, running=2, waiting=3)}
    assert overview.every_owner == 1 and overview.owners_waiting == 3
    assert [(use.email, use.running, use.limit, use.waiting, use.own) for use in overview.owners_at_limit] == [
        ("owner@example.com", 2, 1, 3, False)
    ]
    theirs = overview.owners[other_user.pk]
    assert (theirs.running, theirs.limit, theirs.waiting, theirs.at_limit) == (1, 3, 4, False)
    assert busy.pk not in overview.owners  # the third owner runs nothing: under the default


def test_owners_with_work_are_found_by_the_loose_scan_across_queues(owner, other_user):
    task(owner, queue="default")
    task(owner, queue="reports")
    task(other_user, queue="reports", status=TaskStatus.RETRYING)
    task(other_user, status=TaskStatus.RUNNING)
    assert selectors.owners_with_work() == {owner.pk, other_user.pk}
    Task.objects.filter(owner=other_user, status=TaskStatus.RETRYING).delete()
    assert selectors.owners_with_work() == {owner.pk}


def test_the_dashboard_shows_the_limits_panel_and_the_fair_sharing_line(client, operator, busy):
    client.force_login(operator)
    page = client.get(DASHBOARD).content.decode()
    panel = page[page.index('id="concurrency-limits"') : page.index('id="workers"')]
    assert "demo.sleep" in panel and "2 / 2" in panel and "at limit" in panel
    assert "Each owner: at most <strong>1</strong> running at once" in panel
    assert "1 owner with a limit of their own" in panel
    assert "owner@example.com" in panel and "other@example.com" not in panel  # only owners at their limit
    assert "Fair sharing: <strong>3</strong> owners with waiting work" in panel
    assert "Edit the limits" in panel


def test_a_viewer_is_linked_to_see_the_limits_not_to_edit_them(client, viewer, busy):
    client.force_login(viewer)
    page = client.get(DASHBOARD).content.decode()
    assert "See the limits" in page and "Edit the limits" not in page


def test_without_limits_the_panel_says_so(client, operator, owner):
    task(owner)
    client.force_login(operator)
    page = client.get(DASHBOARD).content.decode()
    assert "No concurrency limit is set" in page
    assert "Fair sharing: <strong>1</strong> owner with waiting work" in page


def test_the_panel_is_cached_and_an_edit_through_the_service_drops_it(
    client, operator, busy, django_capture_on_commit_callbacks
):
    client.force_login(operator)
    assert "2 / 2" in client.get(DASHBOARD).content.decode()
    ConcurrencyLimit.objects.filter(scope=LimitScope.KIND).update(limit=5)  # behind the admin's back
    assert "2 / 2" in client.get(DASHBOARD).content.decode()  # the cached panel, up to CACHE_SECONDS
    kind_limit = ConcurrencyLimit.objects.get(scope=LimitScope.KIND)
    kind_limit.limit = 6
    with django_capture_on_commit_callbacks(execute=True):
        limit_services.limit_save(limit=kind_limit, actor=operator)
    assert "2 / 6" in client.get(DASHBOARD).content.decode()


def test_the_dashboard_lists_a_bounded_number_of_owners_at_their_limit(
    client, operator, django_user_model, monkeypatch
):
    monkeypatch.setattr(dashboard, "OWNERS_AT_LIMIT_SHOWN", 2)
    limit(scope=LimitScope.EVERY_OWNER, limit=0)  # every owner with waiting work is at it
    for index in range(4):
        task(django_user_model.objects.create(email=f"u{index}@example.com"))
    client.force_login(operator)
    page = client.get(DASHBOARD).content.decode()
    assert "… and 2 more." in page


def test_waiting_tasks_are_counted_up_to_a_cap_and_then_said_to_be_more(owner, monkeypatch):
    monkeypatch.setattr(selectors, "WAITING_COUNTED", 2)
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=0)
    limit(scope=LimitScope.OWNER, owner=owner, limit=0)
    for _ in range(5):
        task(owner)
    overview = selectors.limits_overview(now=timezone.now())
    assert overview.kinds["demo.sleep"].waiting == 3 and overview.kinds["demo.sleep"].waiting_text == "more than 2"
    assert overview.owners[owner.pk].waiting_text == "more than 2"
    monkeypatch.setattr(selectors, "WAITING_COUNTED", 10)
    assert selectors.limits_overview(now=timezone.now()).kinds["demo.sleep"].waiting_text == "5"
