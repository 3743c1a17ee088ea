import uuid

from django.conf import settings
from django.db import models
from django.db.models import Case, Q, When

from apps.core.json_contains import contains_filter


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)
# A worker may claim a task in these states (and only when it is due).
CLAIMABLE_STATUSES = (TaskStatus.QUEUED, TaskStatus.RETRYING)
# Cancel takes effect at once in these states; a running task is asked to stop instead.
WAITING_STATUSES = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RETRYING)
RETRYABLE_STATUSES = (TaskStatus.FAILED, TaskStatus.CANCELLED)
UNFINISHED_STATUSES = (*WAITING_STATUSES, TaskStatus.RUNNING)


class TaskPriority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


# Celery message priority on Redis: the broker serves lower numbers first, in steps of 0/3/6/9.
CELERY_PRIORITY = {
    TaskPriority.CRITICAL: 0,
    TaskPriority.HIGH: 3,
    TaskPriority.NORMAL: 6,
    TaskPriority.LOW: 9,
}


# Within one owner, waiting tasks are claimed by priority, then age (fairness.py); this rank is
# the claim's order and the leading expression of its index (task_claimable_owner).
PRIORITY_ORDER = ((TaskPriority.CRITICAL, 0), (TaskPriority.HIGH, 1), (TaskPriority.NORMAL, 2), (TaskPriority.LOW, 3))
PRIORITY_RANK = Case(*(When(priority=priority, then=rank) for priority, rank in PRIORITY_ORDER[:-1]), default=3)


class TaskTrigger(models.TextChoices):
    API = "api", "API"
    SCHEDULE = "schedule", "Schedule"
    RUN_NOW = "run_now", "Run now"
    ADMIN = "admin", "Admin"


class OverlapPolicy(models.TextChoices):
    ALLOW = "allow", "Allow overlapping runs"
    SKIP = "skip", "Skip while the previous run is unfinished"


class TaskQuerySet(models.QuerySet):
    def visible_to(self, user):
        if user.is_staff:
            return self
        return self.filter(owner=user)

    def final(self):
        return self.filter(status__in=FINAL_STATUSES)

    def failed(self):
        return self.filter(status=TaskStatus.FAILED)

    def payload_contains(self, template: dict):
        """Tasks whose payload contains `template` (jsonb `@>`; index task_payload_gin)."""
        return self.filter(contains_filter("payload", template))

    def result_contains(self, template: dict):
        """Tasks whose result contains `template`; a task without a result never matches."""
        return self.filter(contains_filter("result", template))


class Task(models.Model):
    """One unit of work of a registered kind. The id is also the Celery task id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: task_owner_created leads with the owner (one index less to write
    # on every transition).
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks", db_index=False)
    kind = models.CharField(max_length=100)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, choices=TaskPriority.choices, default=TaskPriority.NORMAL)
    queue = models.CharField(max_length=100, default="default")
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.PENDING)

    attempts = models.PositiveIntegerField(default=0, help_text="Runs started so far.")
    max_retries = models.PositiveIntegerField(default=3, help_text="Automatic retries after the first run.")
    timeout = models.PositiveIntegerField(default=300, help_text="Seconds one run may take.")
    run_at = models.DateTimeField(null=True, blank=True, help_text="When the next run is due (ETA or backoff).")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)

    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=300, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Fencing token of the current run: a stale run whose token no longer matches cannot
    # report progress or finish the task.
    run_id = models.UUIDField(null=True, blank=True, editable=False)
    cancel_requested = models.BooleanField(default=False)
    callback_url = models.URLField(max_length=2000, blank=True, help_text="Notified once when the task finishes.")
    trigger = models.CharField(max_length=10, choices=TaskTrigger.choices, default=TaskTrigger.API)
    schedule = models.ForeignKey(
        "tasks.Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )

    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When the last wake-up was published.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("retry_task", "Can retry tasks"),
            ("cancel_task", "Can cancel tasks"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="task_owner_created"),
            models.Index(fields=["status", "-created_at", "-id"], name="task_status_created"),
            models.Index(fields=["-created_at", "-id"], name="task_created"),
            # The admin's filters, alone or combined: each list is read in the changelist's
            # order (newest first) from an index led by its equality filter.
            models.Index(fields=["kind", "-created_at", "-id"], name="task_kind_created"),
            models.Index(fields=["kind", "status", "-created_at", "-id"], name="task_kind_status_created"),
            models.Index(fields=["priority", "-created_at", "-id"], name="task_priority_created"),
            models.Index(fields=["-created_at", "-id"], name="task_has_error_created", condition=~Q(error="")),
            # The dashboard's time-bounded aggregates (throughput, failures, run times by kind)
            # are answered from this index alone.
            models.Index(
                fields=["finished_at", "status", "kind", "started_at"],
                name="task_finished",
                condition=Q(finished_at__isnull=False),
            ),
            # The reaper's and dispatcher's sweeps touch only the few live rows.
            models.Index(
                fields=["lease_expires_at"], name="task_running_lease", condition=Q(status=TaskStatus.RUNNING)
            ),
            # An owner's tasks not yet final, counted for their quota (apps/tasks/quotas.py).
            models.Index(fields=["owner"], name="task_unfinished_owner", condition=Q(status__in=UNFINISHED_STATUSES)),
            models.Index(
                fields=["run_at"],
                name="task_waiting_due",
                condition=Q(status__in=[TaskStatus.PENDING, TaskStatus.RETRYING]),
            ),
            # The fair claim (fairness.py): owners with claimable work in a queue, found by a
            # loose scan, and each owner's next task by priority, then age.
            models.Index(
                "queue",
                "owner",
                PRIORITY_RANK,
                "created_at",
                name="task_claimable_owner",
                condition=Q(status__in=CLAIMABLE_STATUSES),
            ),
            models.Index(
                fields=["queued_at"],
                name="task_dispatched",
                condition=Q(status__in=[TaskStatus.QUEUED, TaskStatus.RETRYING]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="task_unique_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="task_progress_0_100"),
        ]

    def __str__(self):
        return f"{self.kind} {str(self.id)[:8]}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def queue_wait(self):
        if self.started_at and self.created_at:
            return self.started_at - self.created_at
        return None

    @property
    def run_time(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class TaskFileRole(models.TextChoices):
    INPUT = "input", "Input"
    OUTPUT = "output", "Output"


class TaskFile(models.Model):
    """A stored file a task reads (named in its payload) or wrote (saved by its kind)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="file_links")
    file = models.ForeignKey(
        "files.StoredFile", on_delete=models.CASCADE, related_name="task_links", db_index=False
    )  # taskfile_file_role leads with it
    role = models.CharField(max_length=10, choices=TaskFileRole.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["role", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["task", "file", "role"], name="taskfile_unique_link")]
        indexes = [models.Index(fields=["file", "role"], name="taskfile_file_role")]

    def __str__(self):
        return f"{self.role} {self.file_id} of {self.task_id}"


class TaskEvent(models.Model):
    """One state change or staff action on a task: who, when, from → to, why."""

    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="events", db_index=False
    )  # taskevent_task_created leads with it
    created_at = models.DateTimeField(auto_now_add=True)
    from_status = models.CharField(max_length=10, choices=TaskStatus.choices, blank=True)
    to_status = models.CharField(max_length=10, choices=TaskStatus.choices, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveIntegerField(default=0)

    class Meta:
        # Insertion order: a transition stamps its event before it waits for the row lock,
        # so created_at can trail a later event by milliseconds; ids follow the commits.
        ordering = ["id"]
        indexes = [models.Index(fields=["task", "created_at"], name="taskevent_task_created")]

    def __str__(self):
        return f"{self.from_status or '∅'} → {self.to_status or self.from_status}"


class ScheduleQuerySet(models.QuerySet):
    def visible_to(self, user):
        if user.is_staff:
            return self
        return self.filter(owner=user)


class Schedule(models.Model):
    """A recurring submission of one kind and payload, driven by celery-beat.

    `next_run_at` is TaskFlow's own idea of the next run; a firing claims it with one
    conditional UPDATE, so two beats (or beat and the catch-up sweep) never fire one run twice.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, choices=TaskPriority.choices, default=TaskPriority.NORMAL)
    cron = models.CharField(max_length=100, blank=True, help_text="minute hour day-of-month month day-of-week")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Berlin")
    enabled = models.BooleanField(default=True)
    paused_reason = models.CharField(max_length=500, blank=True)
    overlap_policy = models.CharField(max_length=10, choices=OverlapPolicy.choices, default=OverlapPolicy.ALLOW)

    next_run_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_run_task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    skipped_runs = models.PositiveIntegerField(default=0)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="taskflow_schedule",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        permissions = [("run_schedule", "Can run schedules now")]
        indexes = [
            models.Index(fields=["next_run_at"], name="schedule_due", condition=Q(enabled=True)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="schedule_unique_name_per_owner"),
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval_seconds__isnull=False))
                | (~Q(cron="") & Q(interval_seconds__isnull=True)),
                name="schedule_cron_xor_interval",
            ),
        ]

    def __str__(self):
        return self.name


class TaskRollup(models.Model):
    """Finished tasks of one kind and final status in one minute or hour (by finished_at, UTC).

    Kept by rollups.refresh from the table (never by the finishing transaction), read by the
    dashboard instead of scanning millions of tasks; rows outlive the tasks' retention.
    """

    span = models.PositiveIntegerField(help_text="Bucket length in seconds: 60 or 3600.")
    bucket = models.DateTimeField(help_text="Start of the minute or hour (UTC).")
    kind = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=TaskStatus.choices)
    finished = models.PositiveIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0, help_text="Finished tasks that had started (with a run time).")
    run_seconds = models.FloatField(default=0.0, help_text="Sum of their run times.")
    # {bucket index: runs}: run times on a log scale, 8 buckets per doubling (rollups.py).
    run_histogram = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["span", "bucket", "kind", "status"], name="taskrollup_unique_bucket")
        ]

    def __str__(self):
        return f"{self.kind} {self.status} {self.bucket:%Y-%m-%d %H:%M} ({self.span} s)"


class TaskRollupState(models.Model):
    """How far the rollups are final: buckets before `complete_before` are not recomputed."""

    name = models.CharField(max_length=50, primary_key=True)
    complete_before = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    # {minute: [finishes, sum of finished_at]} of the minutes still re-checked (rollups.py).
    fingerprints = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return self.name


class LimitScope(models.TextChoices):
    KIND = "kind", "One kind, all owners together"
    OWNER = "owner", "One owner, all kinds together"
    EVERY_OWNER = "every_owner", "Each owner (the default)"


class ConcurrencyLimit(models.Model):
    """How many tasks may run at once: of one kind (all owners together), of one owner, or of
    each owner (the default that an owner's own row overrides). Read by every worker's claim
    (fairness.py), so a change applies within a second, with no restart; tasks over a limit stay
    queued, and the task's detail says which limit they wait for."""

    scope = models.CharField(max_length=12, choices=LimitScope.choices)
    kind = models.CharField(max_length=100, blank=True, help_text="For a kind's limit.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="concurrency_limits",
        help_text="For one owner's limit.",
    )
    limit = models.PositiveIntegerField(help_text="Tasks running at once; 0 holds them all until it is raised.")
    note = models.CharField(max_length=200, blank=True, help_text="Why this limit (shown to operators).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "kind", "owner_id"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(scope="kind"), name="limit_unique_kind"),
            models.UniqueConstraint(fields=["owner"], condition=Q(scope="owner"), name="limit_unique_owner"),
            models.UniqueConstraint(fields=["scope"], condition=Q(scope="every_owner"), name="limit_one_default"),
            models.CheckConstraint(
                condition=(Q(scope="kind") & ~Q(kind="") & Q(owner__isnull=True))
                | (Q(scope="owner") & Q(kind="") & Q(owner__isnull=False))
                | (Q(scope="every_owner") & Q(kind="") & Q(owner__isnull=True)),
                name="limit_scope_fields",
            ),
        ]

    def __str__(self):
        if self.scope == LimitScope.KIND:
            return f"{self.kind}: {self.limit} at once"
        if self.scope == LimitScope.OWNER:
            return f"{self.owner}: {self.limit} at once"
        return f"each owner: {self.limit} at once"
