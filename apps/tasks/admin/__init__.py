"""The operators' admin for the tasks app, one module per model plus the task list's pages.

- task.py: the task list and the read-only task page (TaskAdmin)
- pages.py: the dashboard, the task page's buttons, bulk retry/cancel, "retry all matching"
- filters.py: the task list's filters, with the owner autocomplete
- schedule.py: user schedules (ScheduleAdmin), results.py: django-celery-results with a retry
- limits.py: the concurrency limits (ConcurrencyLimitAdmin), with what each holds now

Every staff write goes through apps.core.services.audited (the write and its AuditEntry in
one transaction). Importing the modules registers their ModelAdmins.
"""

from .limits import ConcurrencyLimitAdmin
from .results import TaskResultAdmin
from .schedule import ScheduleAdmin
from .task import TaskAdmin

__all__ = ["ConcurrencyLimitAdmin", "ScheduleAdmin", "TaskAdmin", "TaskResultAdmin"]
