from django.conf import settings
from django.db import models


class Item(models.Model):
    """One table: what a user's own service would store for a submitted job."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    kind = models.CharField(max_length=100)
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, default="queued")
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.kind} {self.pk}"
