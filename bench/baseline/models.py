"""The baselines' models: one plain table, and the task table under the stock ModelAdmin."""

from django.db import models

from apps.tasks.models import Task


class Row(models.Model):
    """One table, no relations: what a minimal DRF service would store for a submission."""

    owner_id = models.BigIntegerField()
    kind = models.CharField(max_length=100)
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, default="queued")
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at", "-id"], name="baseline_row_created")]

    def __str__(self):
        return f"{self.kind} {self.pk}"


class StockTask(Task):
    """The task table under another name, so that none of TaskFlow's admin templates apply."""

    class Meta:
        proxy = True
