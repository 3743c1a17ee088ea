from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    verbose_name = "Tasks"

    def ready(self):
        from django.db import transaction
        from django.db.models.signals import post_delete, post_save
        from django.utils.module_loading import autodiscover_modules

        from apps.accounts.models import Quota
        from apps.core.metrics import register_system_gauges

        from . import fairness, metrics, quotas
        from .models import ConcurrencyLimit

        def limit_saved(instance, signal, **_kwargs):
            fairness.forget_limits()
            removed = signal is post_delete
            transaction.on_commit(lambda: fairness.limit_changed(instance, removed=removed))

        # An edit applies to this process's next claim, and wakes what the new room admits.
        post_save.connect(limit_saved, sender=ConcurrencyLimit, weak=False)
        post_delete.connect(limit_saved, sender=ConcurrencyLimit, weak=False)

        def quota_saved(instance, **_kwargs):
            # At once, and again after the commit: a submission in between could keep a
            # headroom made from the figures before the edit.
            quotas.backlog_forget(instance.user)
            transaction.on_commit(lambda: quotas.backlog_forget(instance.user))

        # An owner's new figures apply to the next submission, from any process.
        post_save.connect(quota_saved, sender=Quota, weak=False)
        post_delete.connect(quota_saved, sender=Quota, weak=False)

        autodiscover_modules("kinds")  # every app's kinds.py registers its task kinds
        # Queue depths and tasks by status, computed when the web's /metrics is scraped.
        register_system_gauges(metrics.SYSTEM_GAUGES)
