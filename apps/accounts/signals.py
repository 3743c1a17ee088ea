"""A user's cached quotas are dropped whenever their Quota row changes, from any door."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Quota
from .services import quota_forget


@receiver([post_save, post_delete], sender=Quota, dispatch_uid="accounts.quota_forget")
def forget_cached_quota(sender, instance: Quota, **kwargs):
    quota_forget(instance.user)
