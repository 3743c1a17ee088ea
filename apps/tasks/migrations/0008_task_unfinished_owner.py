"""An index of each owner's tasks not yet final, for the quota on them (apps/tasks/quotas.py).

Partial: a task leaves it when it finishes, so it stays the size of the backlog, not of the
table. On PostgreSQL it is built CONCURRENTLY (the migration is not atomic), so submissions and
finishes go on while it builds on a large table; SQLite (the embedded mode) builds it plainly.
"""

from django.db import migrations, models

INDEX = models.Index(
    fields=["owner"],
    name="task_unfinished_owner",
    condition=models.Q(status__in=["pending", "queued", "retrying", "running"]),
)


def add_index(apps, schema_editor):
    model = apps.get_model("tasks", "Task")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX.name}")  # an interrupted build's
        schema_editor.add_index(model, INDEX, concurrently=True)
    else:
        schema_editor.add_index(model, INDEX)


def remove_index(apps, schema_editor):
    model = apps.get_model("tasks", "Task")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.remove_index(model, INDEX, concurrently=True)
    else:
        schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("tasks", "0007_drop_redundant_fk_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(add_index, remove_index, elidable=False)],
            state_operations=[migrations.AddIndex(model_name="task", index=INDEX)],
        )
    ]
