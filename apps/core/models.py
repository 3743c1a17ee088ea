from django.conf import settings
from django.db import models

# An audit row keeps at most this many affected ids; `object_count` keeps the full number.
AUDIT_MAX_IDS = 200


class AuditEntry(models.Model):
    """One staff action: who did what to which objects, when and why. Written, never edited."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=100, help_text="e.g. task.retry, task.bulk_retry, result.retry")
    reason = models.TextField(blank=True)
    object_type = models.CharField(max_length=100, help_text="app_label.model of the affected objects")
    object_count = models.PositiveIntegerField(default=0, help_text="How many objects the action affected.")
    object_ids = models.JSONField(default=list, blank=True, help_text=f"The first {AUDIT_MAX_IDS} affected ids.")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        indexes = [
            models.Index(fields=["user", "-created_at"], name="audit_user_created"),
            models.Index(fields=["action", "-created_at"], name="audit_action_created"),
        ]

    def __str__(self):
        who = self.user.email if self.user_id and self.user else "system"
        return f"{who}: {self.action} ({self.object_count} {self.object_type})"
