from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    verbose_name = "Tasks"

    def ready(self):
        from django.utils.module_loading import autodiscover_modules

        from apps.core.metrics import register_system_gauges

        from . import metrics

        autodiscover_modules("kinds")  # every app's kinds.py registers its task kinds
        # Queue depths and tasks by status, computed when the web's /metrics is scraped.
        register_system_gauges(metrics.SYSTEM_GAUGES)
