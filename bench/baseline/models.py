"""The baselines' models: the task table under the stock ModelAdmin."""

from apps.tasks.models import Task


class StockTask(Task):
    """The task table under another name, so that none of TaskFlow's admin templates apply."""

    class Meta:
        proxy = True
