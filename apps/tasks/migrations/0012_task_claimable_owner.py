"""The fair claim's index: claimable tasks by queue and owner, then priority rank and age.

Partial (queued and retrying tasks only), so it holds the backlog, not the table. On PostgreSQL
it is built CONCURRENTLY (the migration is not atomic), so submissions and claims go on during
the build; an INVALID index left by an interrupted build is dropped and built again. SQLite
(the embedded mode) builds it as usual.
"""

from django.db import migrations, models

INDEX = models.Index(
    models.F("queue"),
    models.F("owner"),
    models.Case(
        models.When(priority="critical", then=0),
        models.When(priority="high", then=1),
        models.When(priority="normal", then=2),
        default=3,
    ),
    models.F("created_at"),
    condition=models.Q(("status__in", ("queued", "retrying"))),
    name="task_claimable_owner",
)


def create_index(apps, schema_editor):
    model = apps.get_model("tasks", "Task")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_index(model, INDEX)
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [INDEX.name])
        row = cursor.fetchone()
    if row is not None and row[0]:
        return
    if row is not None:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX.name}")
    schema_editor.add_index(model, INDEX, concurrently=True)


def drop_index(apps, schema_editor):
    model = apps.get_model("tasks", "Task")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.remove_index(model, INDEX)
        return
    schema_editor.remove_index(model, INDEX, concurrently=True)


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("tasks", "0011_concurrency_limit")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="task", index=INDEX)],
            database_operations=[migrations.RunPython(create_index, drop_index)],
        )
    ]
