"""The fair claim and the concurrency limits (apps/tasks/fairness.py), on the real database.

A wake-up names a task; the claim takes the fairest claimable task of the wake-up's queue:
round-robin across owners, the least served first, then priority and age within an owner,
within every limit. (Real workers and two owners: test_fair_workers.py.)
"""

import threading
import uuid
from datetime import timedelta

import pytest
import structlog
from django.db import connection
from django.utils import timezone

from apps.tasks import executor, fairness, services
from apps.tasks.models import ConcurrencyLimit, LimitScope, Task, TaskStatus

pytestmark = pytest.mark.django_db


def queued(owner, count=1, **fields) -> list[Task]:
    """Tasks queued one after another (created_at strictly increasing), in the test's queue."""
    start = timezone.now() - timedelta(minutes=10)
    made = []
    for _ in range(count):
        task = Task.objects.create(
            owner=owner, **({"kind": "demo.noop", "status": TaskStatus.QUEUED, "queue": "fair"} | fields)
        )
        Task.objects.filter(pk=task.pk).update(
            created_at=start + timedelta(seconds=Task.objects.count()), queued_at=start
        )
        made.append(task)
    return made


def claim(named: Task, worker="w1") -> Task | None:
    return services.task_claim(task_id=named.pk, worker=worker, queue=named.queue)


def claims_at_once(named: list[Task]) -> list[Task | None]:
    """One claim per named task, each on its own thread and connection, released together."""
    barrier = threading.Barrier(len(named))
    results = []

    def race(index):
        try:
            barrier.wait()
            results.append(claim(named[index], worker=f"w{index}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(index,)) for index in range(len(named))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def limit(**fields) -> ConcurrencyLimit:
    return ConcurrencyLimit.objects.create(**fields)


@pytest.fixture(autouse=True)
def rank_for_every_claim(monkeypatch):
    """Each claim ranks afresh: a process claims from its ranking for LISTED_FOR seconds,
    which the tests of that reuse set themselves."""
    monkeypatch.setattr(fairness, "LISTED_FOR", 0)


def test_wake_ups_of_one_owners_flood_serve_another_owner_in_turn(owner, other_user):
    flood = queued(owner, 10)
    few = queued(other_user, 3)
    # Every message names one of the flood's tasks, as a broker queue would hand them out.
    claimed = [claim(named) for named in flood[:8]]
    assert [task.owner_id for task in claimed[:6]] == [owner.pk, other_user.pk] * 3
    assert {task.pk for task in claimed[:6]} == {task.pk for task in few + flood[:3]}
    # Alone again: the owner's tasks, each once.
    assert {task.owner_id for task in claimed[6:]} == {owner.pk}
    assert len({task.pk for task in claimed}) == 8


def test_the_least_served_owner_goes_first_whatever_the_arrival_order(owner, other_user):
    busy = queued(owner, 4)
    for named in busy[:3]:
        claim(named)  # the owner now runs three tasks
    late = queued(other_user, 1)
    assert claim(busy[3]).pk == late[0].pk


def test_within_an_owner_priority_then_age(owner, other_user):
    old_normal, old_low = queued(owner), queued(owner, priority="low")
    newer_high = queued(owner, priority="high")
    queued(other_user, 3, priority="low")  # someone to be fair to: the claim ranks
    order = [claim(old_normal[0]) for _ in range(6)]
    mine = [task.pk for task in order if task.owner_id == owner.pk]
    assert mine == [newer_high[0].pk, old_normal[0].pk, old_low[0].pk]
    # Equal turns go by priority: the owner's high task before the other's low one.
    assert order[0].pk == newer_high[0].pk


def test_an_owner_alone_in_its_queue_claims_the_named_task(owner, other_user):
    """Nobody to be fair to: the wake-up's own task (the broker hands them out by priority)."""
    _first, second = queued(owner, 2)
    queued(other_user, queue="elsewhere")  # another queue does not count
    assert claim(second).pk == second.pk


def test_a_process_reuses_its_ranking_for_a_moment(owner, other_user, make_user, monkeypatch):
    """Within LISTED_FOR of a ranking a process claims down its list; an owner who arrives
    meanwhile has its turn at the next ranking."""
    monkeypatch.setattr(fairness, "LISTED_FOR", 60)
    mine, theirs = queued(owner, 3), queued(other_user)
    assert claim(mine[0]).pk == mine[0].pk
    ranking = fairness._listed["fair"]
    late = queued(make_user("late@example.com"))
    assert claim(mine[0]).pk == theirs[0].pk  # from the ranking made before they arrived
    assert fairness._listed["fair"] is ranking
    ranking.ranked_at -= 60  # the moment is over
    assert claim(mine[0]).pk == late[0].pk
    assert fairness._listed["fair"] is not ranking


def test_ids_of_a_ranking_taken_by_other_processes_are_passed_over(owner, other_user, monkeypatch):
    monkeypatch.setattr(fairness, "LISTED_FOR", 60)
    mine = queued(owner, fairness.CLAIM_FROM + 3)
    theirs = queued(other_user, priority="low")  # ranked second: the same turn, a lower priority
    assert claim(mine[0]).pk == mine[0].pk
    ranking = fairness._listed["fair"]
    # Other processes claim the next CLAIM_FROM + 1 of this ranking: past the ids one claim passes.
    taken = [theirs[0].pk] + [task.pk for task in mine[1 : fairness.CLAIM_FROM + 1]]
    Task.objects.filter(pk__in=taken).update(status=TaskStatus.RUNNING)
    assert claim(mine[0]).pk == mine[fairness.CLAIM_FROM + 1].pk
    assert fairness._listed["fair"] is ranking and ranking.ids == [str(mine[-1].pk)]


def test_a_ranking_used_up_by_other_claims_is_made_again_at_once(owner, other_user, make_user, monkeypatch):
    """Every id of a fresh ranking taken meanwhile: the claim ranks again rather than drop its
    message while tasks wait."""
    monkeypatch.setattr(fairness, "LISTED_FOR", 60)
    mine, theirs = queued(owner, 3), queued(other_user)
    assert claim(mine[0]).pk == mine[0].pk
    Task.objects.filter(pk__in=[mine[1].pk, mine[2].pk, theirs[0].pk]).update(status=TaskStatus.RUNNING)
    late = queued(make_user("late@example.com"))
    assert claim(mine[0]).pk == late[0].pk
    assert claim(mine[0]) is None  # and nothing waits now: the message is dropped


def test_a_claim_takes_only_due_tasks_of_its_own_queue(owner, other_user):
    elsewhere = queued(other_user, queue="elsewhere")
    later = queued(other_user, status=TaskStatus.RETRYING, run_at=timezone.now() + timedelta(minutes=5))
    mine = queued(owner)
    assert claim(mine[0]).pk == mine[0].pk
    assert claim(mine[0]) is None  # nothing left that is due in "fair"
    assert Task.objects.get(pk=elsewhere[0].pk).status == TaskStatus.QUEUED
    assert Task.objects.get(pk=later[0].pk).status == TaskStatus.RETRYING


def test_a_wake_up_whose_task_is_gone_still_claims_for_its_queue(owner):
    waiting = queued(owner)
    ghost = Task(id=uuid.uuid4(), queue="fair")  # cancelled and deleted since its publish
    assert claim(ghost).pk == waiting[0].pk


def test_a_wake_up_whose_task_was_taken_claims_its_owners_last_ranked_task(owner):
    """Alone in its queue, an owner's next task's wake-up is likely in flight already: taking
    that task would make its wake-up miss in turn, and so on down the backlog."""
    mine = queued(owner, 3)
    ghost = Task(id=uuid.uuid4(), queue="fair")
    assert claim(ghost).pk == mine[2].pk
    assert claim(mine[0]).pk == mine[0].pk  # the quick path again: the ranking is one owner's
    assert claim(mine[1]).pk == mine[1].pk


def test_an_owner_who_arrives_after_a_one_owner_ranking_is_served_at_the_next_claim(owner, other_user, monkeypatch):
    monkeypatch.setattr(fairness, "LISTED_FOR", 60)
    mine = queued(owner, 3)
    assert claim(Task(id=uuid.uuid4(), queue="fair")).pk == mine[2].pk  # a one-owner ranking
    theirs = queued(other_user)
    assert claim(mine[0]).pk == theirs[0].pk  # the quick path misses, and the claim ranks again


def test_with_fairness_off_the_named_task_is_claimed(owner, other_user, settings):
    settings.TASK_FAIR_CLAIM = False
    flood = queued(owner, 3)
    queued(other_user, 1)
    assert [claim(named).pk for named in flood] == [task.pk for task in flood]


def test_a_kind_at_its_limit_waits_while_other_kinds_run(owner, other_user):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=1)
    sleeps = queued(owner, 2, kind="demo.sleep")
    noop = queued(other_user, kind="demo.noop")
    assert claim(sleeps[0]).pk == sleeps[0].pk
    assert claim(sleeps[1]).pk == noop[0].pk  # the second sleep is over the kind's limit
    assert claim(sleeps[1]) is None  # and nothing else waits: the message is dropped
    assert Task.objects.get(pk=sleeps[1].pk).status == TaskStatus.QUEUED


def test_an_owners_own_limit_overrides_the_default_for_each_owner(owner, other_user):
    limit(scope=LimitScope.EVERY_OWNER, limit=1)
    limit(scope=LimitScope.OWNER, owner=owner, limit=2)
    mine, theirs = queued(owner, 3), queued(other_user, 2)
    claimed = [claim(named) for named in mine + theirs]
    running = Task.objects.filter(status=TaskStatus.RUNNING)
    assert running.filter(owner=owner).count() == 2 and running.filter(owner=other_user).count() == 1
    assert sum(task is not None for task in claimed) == 3
    assert Task.objects.get(pk=theirs[1].pk).status == TaskStatus.QUEUED


def test_candidates_taken_by_other_claims_meanwhile_do_not_drop_the_message(owner, monkeypatch):
    """A limited claim (and every claim on SQLite) tries a few candidates of one ranking; when
    other processes took them all between the ranking and the tries, it ranks again rather
    than drop its message while tasks wait: a dropped message strands a task until the
    reaper's re-dispatch."""
    limit(scope=LimitScope.KIND, kind="demo.noop", limit=100)
    waiting = queued(owner, fairness.LIMITED_TRIES + 1)
    claim_within = fairness._claim_within
    tries = []

    def others_claim_first(scopes, transition, task_id, **kwargs):
        tries.append(task_id)
        if len(tries) <= fairness.LIMITED_TRIES:  # another worker's claim commits first
            Task.objects.filter(pk=task_id).update(status=TaskStatus.RUNNING)
        return claim_within(scopes, transition, task_id, **kwargs)

    monkeypatch.setattr(fairness, "_claim_within", others_claim_first)
    assert claim(waiting[0]).pk == waiting[-1].pk
    assert tries == [task.pk for task in waiting]


def test_a_run_for_another_tasks_wake_up_logs_the_task_that_ran(owner, other_user):
    busy = queued(owner, 2)
    claim(busy[0])
    theirs = queued(other_user)
    # What the wake-up's header binds (django-structlog): its own task and submitting request.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=str(busy[1].pk), request_id="submit-1", user_id=owner.pk)
    try:
        assert executor.execute(busy[1].pk, worker="w1", queue="fair") == "succeeded"
        context = structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()
    assert Task.objects.get(pk=theirs[0].pk).status == TaskStatus.SUCCEEDED
    assert context["task_id"] == str(theirs[0].pk) and context["user_id"] == other_user.pk
    assert context["wake_up_of"] == str(busy[1].pk) and "request_id" not in context


def test_a_limit_of_zero_holds_the_scope(owner):
    limit(scope=LimitScope.OWNER, owner=owner, limit=0)
    mine = queued(owner)
    assert claim(mine[0]) is None


@pytest.mark.django_db(transaction=True)
def test_a_limit_holds_when_claims_race_on_separate_connections(owner, other_user):
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=2)
    tasks = queued(owner, 6, kind="demo.sleep") + queued(other_user, 6, kind="demo.sleep")
    results = claims_at_once(tasks[:8])
    assert Task.objects.filter(status=TaskStatus.RUNNING).count() == 2
    assert sum(task is not None for task in results) == 2


@pytest.mark.django_db(transaction=True)
def test_racing_claims_without_limits_each_take_a_different_task(owner):
    results = claims_at_once(queued(owner, 8))
    # No message is wasted while tasks wait: eight claims, eight different tasks.
    assert len({task.pk for task in results if task is not None}) == 8


def broker_depth(redis_client, queue: str) -> int:
    """Wake-ups waiting in `queue` (no worker consumes "fair": earlier tests' stay; see empty_fair_queue)."""
    return sum(redis_client.llen(key) for key in redis_client.keys(f"{queue}*") if redis_client.type(key) == b"list")


@pytest.fixture
def empty_fair_queue(redis_client):
    for key in redis_client.keys("fair*"):
        redis_client.delete(key)
    return redis_client


def test_a_finish_in_a_full_scope_wakes_its_next_waiting_task(
    owner, empty_fair_queue, django_capture_on_commit_callbacks
):
    redis_client = empty_fair_queue
    limit(scope=LimitScope.KIND, kind="demo.sleep", limit=1)
    first, second = queued(owner, 2, kind="demo.sleep")
    running = claim(first)
    assert claim(second) is None  # dropped: the kind is full
    assert broker_depth(redis_client, "fair") == 0
    with django_capture_on_commit_callbacks(execute=True):
        services.task_succeed(task=running, result={})
    assert broker_depth(redis_client, "fair") == 1  # the wake-up the dropped message was
    assert claim(second).pk == second.pk


def test_raising_a_limit_wakes_what_the_new_room_admits(owner, empty_fair_queue, django_capture_on_commit_callbacks):
    redis_client = empty_fair_queue
    held = limit(scope=LimitScope.OWNER, owner=owner, limit=0)
    queued(owner, 5)
    held.limit = 3
    with django_capture_on_commit_callbacks(execute=True):
        held.save()
    assert broker_depth(redis_client, "fair") == 3


def test_candidates_in_python_match_the_statement(owner, other_user, make_user):
    """The embedded mode (SQLite) orders candidates in Python: the same answer as PostgreSQL's."""
    third = make_user("third@example.com")
    limit(scope=LimitScope.KIND, kind="demo.fail", limit=1)
    limit(scope=LimitScope.OWNER, owner=third, limit=1)
    queued(owner, 5)
    queued(owner, 2, priority="critical")
    queued(other_user, 2, kind="demo.fail")
    queued(other_user, 3, priority="low")
    queued(third, 3)
    claim(queued(other_user, kind="demo.fail")[0])  # demo.fail is now full
    claim(queued(third)[0])  # and so is the third owner
    pick = fairness.FairPick("fair")
    limits, now = fairness.read_limits(), timezone.now()
    assert pick._candidates_by_orm(limits, now) == [tuple(row) for row in pick.candidates(limits, now)]
    # Up to SPREAD // 3 owners = 85 each: the first owner's 7, the other's 3 low ones (its
    # demo.fail tasks wait for their kind), none of the third's (at its own limit).
    assert len(pick.candidates(limits, now)) == 7 + 3


def test_a_run_past_its_timeout_gets_the_soft_time_limit(owner):
    """The wake-up no longer carries the task's limits: the run arms its own."""
    task = queued(owner, kind="demo.sleep", payload={"seconds": 5, "steps": 1}, timeout=1, max_retries=0)[0]
    assert executor.execute(task.pk, worker="w1", queue="fair") == "failed"
    task.refresh_from_db()
    assert task.error.startswith("TimeLimitExceeded")


def test_a_wake_up_for_new_room_is_not_lost_to_a_stale_copy_of_the_limits(owner):
    """The wake-ups an edit publishes may arrive before a worker's cached limits are stale: a
    claim that finds everything held reads the limits once more."""
    held = limit(scope=LimitScope.OWNER, owner=owner, limit=0)
    waiting = queued(owner)
    assert claim(waiting[0]) is None  # held, and the limits are now cached in this process
    ConcurrencyLimit.objects.filter(pk=held.pk).update(limit=1)  # as another process's edit
    assert claim(waiting[0]).pk == waiting[0].pk
