"""Fair sharing of the workers: the fair claim and the concurrency limits (docs/fair-sharing.md).

A wake-up on the broker names a task, but it only says "a task of this queue may run": the
worker that takes it claims the fairest claimable task of the queue, which is often another
owner's. The fairest is the next one round-robin across owners, the least served first (an
owner's running tasks count against it), then by priority and age within an owner. Every task
still runs: each message claims at most one task, and there are never fewer messages than
claimable tasks (one per submission, retry and re-dispatch); a claim that finds every
candidate at a limit drops its message, and the finish that frees the slot publishes one again
(`slot_freed`), with the reaper's re-dispatch behind both.

Limits (ConcurrencyLimit rows: per kind, per owner, and the default for each owner) are read
by every claim, cached for LIMITS_SEEN_FOR in a process. They hold across all workers: the
claim of a task that a limit covers takes that scope's advisory lock, recounts the scope's
running tasks under it and claims in the same transaction.

Without any limit, a wake-up whose task's owner is alone in waiting in its queue claims that
task (the quick path: nobody to be fair to). Else a process ranks the queue (sql/queries.sql:
fair_candidates) and claims from that ranking for LISTED_FOR seconds, one statement per claim
(claim_listed: the first of its next ids still claimable, each found by primary key), then
ranks again: the ranking's cost, which grows with the queue's owners and with the tasks
claimed since the last VACUUM, is paid once for many claims.
"""

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, F, IntegerField, OuterRef, Q, Subquery, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import dispatch
from .models import CLAIMABLE_STATUSES, PRIORITY_RANK, ConcurrencyLimit, LimitScope, Task, TaskStatus
from .state_machine import CLAIM_GRACE, Transition
from .transitions import STATEMENTS, Pick, apply, fetch, statement_params, uses_one_statement

logger = logging.getLogger(__name__)

# Seconds a process reuses the limits it read: an edit applies to claims within this delay
# (at once in the process that saved it).
LIMITS_SEEN_FOR = 1.0
# The candidates one ranking holds (sql/queries.sql, fair_choice), and each owner's next tasks
# among them at least: enough that concurrent claims, which skip each other's candidates,
# rarely run out; a claim that does ranks again while claimable tasks remain.
PER_OWNER = 4
SPREAD = 256
FAIR_TRIES = 3
# Seconds a process claims from the ranking it made of a queue before it ranks again (sooner
# when the ranking is used up): an owner whose first task arrives meanwhile waits at most
# this long for its turn, and one ranking serves the process's claims of that moment.
LISTED_FOR = 0.25
# The ranking's next ids one claim passes to claim_listed: the first is usually claimable;
# the others cover what other processes took since the ranking.
CLAIM_FROM = 16
# Candidates a claim tries from one ranking, one transaction each, before it ranks again
# (FAIR_TRIES rankings at most) with limits, and on SQLite (the embedded mode).
LIMITED_TRIES = 4
# Wake-ups published at most when an edit gives a kind or an owner more room.
WAKE_ON_CHANGE = 100


@dataclass(frozen=True)
class Limits:
    kinds: dict[str, int] = field(default_factory=dict)
    owners: dict[int, int] = field(default_factory=dict)
    every_owner: int | None = None

    def __bool__(self) -> bool:
        return bool(self.kinds or self.owners) or self.every_owner is not None

    def owner_limit(self, owner_id) -> int | None:
        return self.owners.get(owner_id, self.every_owner)

    def scopes(self, owner_id, kind: str) -> list[tuple[str, object, int]]:
        """The limited scopes a task of `owner_id` and `kind` runs in: (scope, key, limit),
        the kind's first (the order their locks are taken in: never a deadlock)."""
        found = []
        if kind in self.kinds:
            found.append((LimitScope.KIND, kind, self.kinds[kind]))
        owner_limit = self.owner_limit(owner_id)
        if owner_limit is not None:
            found.append((LimitScope.OWNER, owner_id, owner_limit))
        return found


_seen: tuple[float, Limits] | None = None
_seen_lock = threading.Lock()


def read_limits() -> Limits:
    """The limits as stored now."""
    kinds, owners, every_owner = {}, {}, None
    for scope, kind, owner_id, limit in ConcurrencyLimit.objects.values_list("scope", "kind", "owner_id", "limit"):
        if scope == LimitScope.KIND:
            kinds[kind] = limit
        elif scope == LimitScope.OWNER:
            owners[owner_id] = limit
        else:
            every_owner = limit
    return Limits(kinds, owners, every_owner)


def current_limits() -> Limits:
    """The limits, read at most every LIMITS_SEEN_FOR seconds by this process."""
    seen = _seen
    if seen is not None and time.monotonic() - seen[0] < LIMITS_SEEN_FOR:
        return seen[1]
    return remember_limits(read_limits())


def remember_limits(limits: Limits) -> Limits:
    global _seen
    with _seen_lock:
        _seen = (time.monotonic(), limits)
    return limits


def forget_limits(**_kwargs) -> None:
    """Read the limits again at the next claim (after an edit in this process)."""
    global _seen
    _seen = None


def forget() -> None:
    """Forget what this process learnt: the limits, and its rankings of the queues."""
    forget_limits()
    _listed.clear()


class Listed:
    """A process's ranking of a queue: the ids of fair_candidates, less those this process
    claimed or saw taken since. Shared by several owners, the fairest first. One owner's is
    made when a wake-up's own task was taken (the quick path missed) and serves that claim
    alone; it is kept the other way round, the owner's last-ranked task first: its wake-up is the furthest back
    on the broker, where the next one's is likely in flight already, and its claim would then
    miss in turn, and so on down the whole backlog."""

    def __init__(self, rows: list[tuple]):
        self.shared = len({row[1] for row in rows}) > 1
        self.ids = [str(row[0]) for row in (rows if self.shared else reversed(rows))]
        self.ranked_at = time.monotonic()

    def fresh(self) -> bool:
        return bool(self.ids) and time.monotonic() - self.ranked_at < LISTED_FOR

    def claim(self, params: dict) -> list[Task]:
        """Claim the first of the next CLAIM_FROM ids that is still claimable, and keep the ids
        after it (after all of them when none was)."""
        ids = self.ids[:CLAIM_FROM]
        moved = fetch(STATEMENTS["claim_listed"], {**params, "ids": "{" + ",".join(ids) + "}"})
        taken = ids.index(str(moved[0].pk)) + 1 if moved else len(ids)
        self.ids = self.ids[taken:]
        return moved


# Each process's rankings, by queue (threads of a process share them: a list is replaced, never
# changed in place, and two claims from one list skip each other's like any two claims).
_listed: dict[str, Listed] = {}


def running_counts(*, kinds=(), owners=()) -> tuple[Counter, Counter]:
    """Tasks running now, by kind (of `kinds`) and by owner (of `owners`)."""
    rows = Task.objects.filter(status=TaskStatus.RUNNING).filter(Q(kind__in=kinds) | Q(owner_id__in=owners))
    by_kind, by_owner = Counter(), Counter()
    for kind, owner_id in rows.values_list("kind", "owner_id"):
        by_kind[kind] += kind in kinds
        by_owner[owner_id] += owner_id in owners
    return by_kind, by_owner


class FairPick(Pick):
    """The claim's target: the fairest claimable task of `queue` (fair) or the task the wake-up
    names (`named`, with fairness off: TASK_FAIR_CLAIM), within the limits either way."""

    def __init__(self, queue: str, named=None, *, fair: bool = True):
        self.queue = queue
        self.named = named
        self.fair = fair

    def move(self, transition: Transition, *, now: datetime, values: dict) -> list[Task]:
        limits = current_limits()
        moved = self._move(transition, limits, now=now, values=values)
        if moved or not limits:
            return moved
        # Everything held: a wake-up published for an edit that made room (limit_changed) may
        # reach this process before its copy of the limits is stale. Read them once more.
        fresh = remember_limits(read_limits())
        return self._move(transition, fresh, now=now, values=values) if fresh != limits else []

    def _move(self, transition: Transition, limits: Limits, *, now: datetime, values: dict) -> list[Task]:
        if not limits:
            if not self.fair:
                return apply(transition, self.named, now=now, values=values)
            if uses_one_statement():
                params, _ = statement_params(transition, self.named, now, values)
                # The quick path: the named task, when its owner is alone in waiting (not tried
                # while this process's fresh ranking of the queue says that owners share it).
                listed = _listed.get(self.queue)
                if self.named and not (listed is not None and listed.shared and listed.fresh()):
                    moved = fetch(STATEMENTS["claim_named_alone"], params)
                    if moved:
                        return moved
                    # Missed: its task was taken, or another owner now waits. Rank afresh.
                    _listed.pop(self.queue, None)
                return self._claim_listed(params, limits, now)
        for _ in range(FAIR_TRIES):
            candidates = self.candidates(limits, now)
            for task_id, owner_id, kind in candidates[:LIMITED_TRIES]:
                moved = _claim_within(limits.scopes(owner_id, kind), transition, task_id, now=now, values=values)
                if moved:
                    return moved
            # None left (every one held by a limit, or nothing waits): the message is dropped.
            # Else concurrent claims took the ones tried, or filled their scopes: rank again.
            if not candidates:
                return []
        return []

    def _claim_listed(self, params: dict, limits: Limits, now: datetime) -> list[Task]:
        """The fair claim without limits: from this process's ranking of the queue while it is
        fresh, else from a new one (FAIR_TRIES at most while claimable tasks remain)."""
        listed = _listed.get(self.queue)
        if listed is not None and listed.fresh():
            moved = listed.claim(params)
            while not moved and listed.ids:  # other claims took the ones passed: the next ones
                moved = listed.claim(params)
            if moved:
                return moved
        for _ in range(FAIR_TRIES):
            listed = _listed[self.queue] = Listed(self.candidates(limits, now))
            while listed.ids:
                moved = listed.claim(params)
                if moved:
                    return moved
            # Nothing moved: nothing waits, or concurrent claims took every candidate.
            if not self._waiting(now):
                return []
        return []

    def candidates(self, limits: Limits, now: datetime) -> list[tuple]:
        """(id, owner_id, kind) of the tasks this claim may take, the fairest first."""
        if not self.fair:
            named = Task.objects.filter(pk=self.named, status__in=CLAIMABLE_STATUSES)
            return list(named.values_list("id", "owner_id", "kind"))
        if uses_one_statement():
            with transaction.atomic(), connection.cursor() as cursor:
                # Planned for its parameters each time, the ranking cost more to plan than to
                # run (1.2 ms against 0.7 ms here): its transaction asks for the generic plan,
                # built once per connection.
                cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cursor.execute(STATEMENTS["fair_candidates"], self._choice_params(limits, now))
                return cursor.fetchall()
        return self._candidates_by_orm(limits, now)

    def _waiting(self, now: datetime) -> bool:
        due = Q(run_at__isnull=True) | Q(run_at__lte=now + CLAIM_GRACE)
        return Task.objects.filter(due, queue=self.queue, status__in=CLAIMABLE_STATUSES).exists()

    def _choice_params(self, limits: Limits, now: datetime) -> dict:
        from .transitions import restart_grace

        return {
            "queue": self.queue,
            "now": now,
            "due": now + CLAIM_GRACE,
            "restart_grace": restart_grace(),
            "per_owner": PER_OWNER,
            "spread": SPREAD,
            "limited_kinds": list(limits.kinds),
            "kind_limits": list(limits.kinds.values()),
            "limited_owners": list(limits.owners),
            "owner_limits": list(limits.owners.values()),
            "every_owner_limit": limits.every_owner,
        }

    def _candidates_by_orm(self, limits: Limits, now: datetime) -> list[tuple]:
        """fair_choice for SQLite (the embedded mode): the same order, in Python."""
        running = Task.objects.filter(status=TaskStatus.RUNNING).values_list("owner_id", "kind")
        by_owner, by_kind = Counter(), Counter()
        for owner_id, kind in running:
            by_owner[owner_id] += 1
            by_kind[kind] += 1
        full_kinds = [kind for kind, limit in limits.kinds.items() if by_kind[kind] >= limit]
        waiting = (
            Task.objects.filter(queue=self.queue, status__in=CLAIMABLE_STATUSES)
            .filter(Q(run_at__isnull=True) | Q(run_at__lte=now + CLAIM_GRACE))
            .exclude(kind__in=full_kinds)
        )
        owners = Task.objects.filter(queue=self.queue, status__in=CLAIMABLE_STATUSES).order_by("owner_id")
        owners = list(owners.values_list("owner_id", flat=True).distinct())
        per_owner = max(PER_OWNER, SPREAD // max(len(owners), 1))
        found = []
        for owner_id in owners:
            owner_limit = limits.owner_limit(owner_id)
            room = per_owner if owner_limit is None else min(per_owner, owner_limit - by_owner[owner_id])
            if room <= 0:
                continue
            mine = waiting.filter(owner_id=owner_id).annotate(rank=PRIORITY_RANK).order_by("rank", "created_at")
            for nth, (task_id, kind, rank, created_at) in enumerate(
                mine.values_list("id", "kind", "rank", "created_at")[:room], start=1
            ):
                found.append((by_owner[owner_id] + nth, rank, created_at, task_id, owner_id, kind))
        found.sort(key=lambda candidate: candidate[:3])
        return [candidate[3:] for candidate in found[:SPREAD]]


def _claim_within(scopes, transition: Transition, task_id, *, now: datetime, values: dict) -> list[Task]:
    """Claim one task if every limited scope it runs in has a free slot: under each scope's
    lock (a transaction-scoped advisory lock on PostgreSQL; SQLite's write lock, taken at
    BEGIN, serialises the whole claim), count, then claim, then commit."""
    if not scopes:
        return apply(transition, task_id, now=now, values=values)
    caller_transaction = connection.in_atomic_block
    with transaction.atomic():
        if uses_one_statement():
            with connection.cursor() as cursor:
                if not caller_transaction:  # as for every claim: see sql/queries.sql, claim_task
                    cursor.execute("SET LOCAL synchronous_commit = off")
                for scope, key, _limit in scopes:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"taskflow:{scope}:{key}"])
        kinds = [key for scope, key, _limit in scopes if scope == LimitScope.KIND]
        owners = [key for scope, key, _limit in scopes if scope == LimitScope.OWNER]
        by_kind, by_owner = running_counts(kinds=kinds, owners=owners)
        for scope, key, limit in scopes:
            if (by_kind if scope == LimitScope.KIND else by_owner)[key] >= limit:
                return []
        return apply(transition, task_id, now=now, values=values)


def claim_target(*, task_id, queue: str | None) -> FairPick:
    """What a wake-up for `task_id`, taken from `queue`, claims."""
    if queue is None:
        queue = Task.objects.filter(pk=task_id).values_list("queue", flat=True).first() or "default"
    return FairPick(queue, task_id, fair=settings.TASK_FAIR_CLAIM)


def _scope_filter(scope: str, key) -> Q:
    return Q(kind=key) if scope == LimitScope.KIND else Q(owner_id=key)


def wake_waiting(scope: str, key, count: int) -> int:
    """Publish wake-ups for up to `count` of a scope's claimable, due tasks, oldest first: the
    messages a claim dropped while the scope was full are not coming back by themselves."""
    if count <= 0:
        return 0
    now = timezone.now()
    waiting = (
        Task.objects.filter(_scope_filter(scope, key), status__in=CLAIMABLE_STATUSES)
        .filter(Q(run_at__isnull=True) | Q(run_at__lte=now + CLAIM_GRACE))
        .order_by("created_at")
        .only("id", "kind", "queue", "priority", "run_at")[:count]
    )
    return dispatch.publish(list(waiting))


def slot_freed(task: Task) -> None:
    """After a run of `task` ended (on commit): for each limited scope it ran in that was full
    until now, publish a wake-up for the scope's next waiting task. Concurrent finishes may
    each see the scope below full and publish none; the reaper's re-dispatch stands behind."""
    limits = current_limits()
    scopes = limits.scopes(task.owner_id, task.kind) if limits else []
    if not scopes:
        return
    by_kind, by_owner = running_counts(kinds=[task.kind], owners=[task.owner_id])
    for scope, key, limit in scopes:
        if (by_kind if scope == LimitScope.KIND else by_owner)[key] == limit - 1:
            wake_waiting(scope, key, 1)


def limit_changed(limit: ConcurrencyLimit, *, removed: bool = False) -> int:
    """A limit was saved or removed: wake as many of its scope's waiting tasks as it now has
    room for (up to WAKE_ON_CHANGE). A changed default for each owner is left to the reaper's
    re-dispatch."""
    forget_limits()
    if limit.scope == LimitScope.EVERY_OWNER:
        return 0
    key = limit.kind if limit.scope == LimitScope.KIND else limit.owner_id
    if removed:
        return wake_waiting(limit.scope, key, WAKE_ON_CHANGE)
    if limit.scope == LimitScope.KIND:
        running = running_counts(kinds=[key])[0][key]
    else:
        running = running_counts(owners=[key])[1][key]
    return wake_waiting(limit.scope, key, min(limit.limit - running, WAKE_ON_CHANGE))


# --- Why a task waits: the task's detail in the admin and the API ---------------------------

WAITING_PREFIX = "waiting for a slot: "
# What with_limit_use() adds to each row (None where no limit applies, or the task is not claimable).
LIMIT_USE_FIELDS = ("kind_limit", "kind_running", "owner_limit", "owner_running")


def _running(expression, outer: str):
    """How many running tasks have `expression` equal to the task's `outer` field: a count subquery."""
    running = Task.objects.filter(status=TaskStatus.RUNNING).alias(matched=expression).filter(matched=OuterRef(outer))
    return Coalesce(Subquery(running.order_by().values("status").annotate(n=Count("pk")).values("n")[:1]), 0)


def with_limit_use(queryset):
    """`queryset` with, for each claimable task, the limits of its kind and of its owner (the
    owner's own row, else the default for each owner) and the tasks running in each limited
    scope, read fresh in the query that reads the task (the task detail's ETag changes with
    them). Tasks that are not claimable compute none of it: CASE skips the subqueries."""
    claimable = Q(status__in=CLAIMABLE_STATUSES)
    limits = ConcurrencyLimit.objects.order_by().values("limit")
    kind_limit = Subquery(limits.filter(scope=LimitScope.KIND, kind=OuterRef("kind"))[:1])
    owner_limit = Coalesce(
        Subquery(limits.filter(scope=LimitScope.OWNER, owner_id=OuterRef("owner_id"))[:1]),
        Subquery(limits.filter(scope=LimitScope.EVERY_OWNER)[:1]),
    )
    queryset = queryset.annotate(
        kind_limit=Case(When(claimable, then=kind_limit), output_field=IntegerField()),
        owner_limit=Case(When(claimable, then=owner_limit), output_field=IntegerField()),
    )
    return queryset.annotate(
        kind_running=Case(When(kind_limit__isnull=False, then=_running(F("kind"), "kind"))),
        # `owner_id + 0`: found among the few running tasks (task_status_created), never through
        # the owner's index, which holds all their tasks (a generic plan picked it: 6 ms at 200k).
        owner_running=Case(When(owner_limit__isnull=False, then=_running(F("owner_id") + 0, "owner_id"))),
    )


def _held(status: str, run_at: datetime | None, now: datetime) -> bool:
    """Claimable and due: the tasks a limit can hold (a retry not yet due waits for its time)."""
    return status in CLAIMABLE_STATUSES and (run_at is None or run_at <= now + CLAIM_GRACE)


def describe_wait(*, kind: str, status: str, run_at: datetime | None, use: dict, now: datetime | None = None) -> str:
    """The waiting reason of a task from its row and with_limit_use()'s fields: the limits that
    hold it if it is claimable, due and at one (its kind's first), else ""."""
    if not _held(status, run_at, now or timezone.now()):
        return ""
    held = []
    if use.get("kind_limit") is not None and use["kind_running"] >= use["kind_limit"]:
        held.append(f"kind {kind} limit {use['kind_limit']} reached")
    if use.get("owner_limit") is not None and use["owner_running"] >= use["owner_limit"]:
        held.append(f"owner limit {use['owner_limit']} reached")
    return WAITING_PREFIX + ", ".join(held) if held else ""


def waiting_reason(task: Task) -> str:
    """Why `task` is not running yet when a concurrency limit holds it ("waiting for a slot:
    kind files.csv_report limit 2 reached", "... owner limit 50 reached"); "" when it is not
    claimable and due, or waits only for a worker or its turn. One query, for those only."""
    now = timezone.now()
    if not _held(task.status, task.run_at, now):
        return ""
    use = with_limit_use(Task.objects.filter(pk=task.pk)).values(*LIMIT_USE_FIELDS).first()
    if use is None:  # deleted meanwhile
        return ""
    return describe_wait(kind=task.kind, status=task.status, run_at=task.run_at, use=use, now=now)
