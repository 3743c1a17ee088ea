"""GIN indexes for payload and result containment (`payload @> '{"customer": 42}'`).

jsonb_path_ops: smaller and faster than the default jsonb_ops, and `@>` is the only
operator TaskFlow's searches use. The result index is partial (WHERE result IS NOT NULL):
a new task has no result, so a submission never touches it, and the planner proves the
predicate from any `result @> ...` (the operator is strict).

Built CONCURRENTLY (the migration is not atomic): writes to tasks_task go on during the
build, at the cost of a slower build. A concurrent build that fails leaves an INVALID
index behind; it is dropped and built again rather than kept by IF NOT EXISTS.
Not in the model state (like 0003's trigram index): Django cannot express an operator
class portably, and SQLite's table rebuilds would try to create a GIN index. SQLite
(the embedded mode) gets no index: its containment search scans (apps/core/json_contains.py).
"""

from django.db import migrations

INDEXES = {
    "task_payload_gin": "ON tasks_task USING gin (payload jsonb_path_ops)",
    "task_result_gin": "ON tasks_task USING gin (result jsonb_path_ops) WHERE result IS NOT NULL",
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", [name])
            row = cursor.fetchone()
        if row is not None and row[0]:
            continue
        if row is not None:  # left INVALID by an interrupted concurrent build
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY {name} {definition}")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("tasks", "0008_task_unfinished_owner"),
    ]

    operations = [
        migrations.RunPython(create_indexes, drop_indexes, elidable=False),
    ]
