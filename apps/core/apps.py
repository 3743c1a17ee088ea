from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"

    def ready(self):
        from django.db.backends.signals import connection_created

        from .json_contains import register_sqlite_functions

        # SQLite (the embedded mode) answers JSON containment with a function of ours.
        connection_created.connect(register_sqlite_functions, dispatch_uid="taskflow_sqlite_functions")
