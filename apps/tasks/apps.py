from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "apps.tasks"
    verbose_name = "Tasks"

    def ready(self):
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("kinds")  # every app's kinds.py registers its task kinds
