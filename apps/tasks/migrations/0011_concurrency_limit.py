"""Concurrency limits per kind, per owner and for each owner, read by the fair claim."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0010_task_rollups"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ConcurrencyLimit",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "scope",
                    models.CharField(
                        choices=[
                            ("kind", "One kind, all owners together"),
                            ("owner", "One owner, all kinds together"),
                            ("every_owner", "Each owner (the default)"),
                        ],
                        max_length=12,
                    ),
                ),
                ("kind", models.CharField(blank=True, help_text="For a kind's limit.", max_length=100)),
                (
                    "limit",
                    models.PositiveIntegerField(help_text="Tasks running at once; 0 holds them all until it is raised."),
                ),
                (
                    "note",
                    models.CharField(blank=True, help_text="Why this limit (shown to operators).", max_length=200),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "owner",
                    models.ForeignKey(
                        blank=True,
                        help_text="For one owner's limit.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="concurrency_limits",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"ordering": ["scope", "kind", "owner_id"]},
        ),
        migrations.AddConstraint(
            model_name="concurrencylimit",
            constraint=models.UniqueConstraint(
                condition=models.Q(("scope", "kind")), fields=("kind",), name="limit_unique_kind"
            ),
        ),
        migrations.AddConstraint(
            model_name="concurrencylimit",
            constraint=models.UniqueConstraint(
                condition=models.Q(("scope", "owner")), fields=("owner",), name="limit_unique_owner"
            ),
        ),
        migrations.AddConstraint(
            model_name="concurrencylimit",
            constraint=models.UniqueConstraint(
                condition=models.Q(("scope", "every_owner")), fields=("scope",), name="limit_one_default"
            ),
        ),
        migrations.AddConstraint(
            model_name="concurrencylimit",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("scope", "kind"), models.Q(("kind", ""), _negated=True), ("owner__isnull", True)),
                    models.Q(("scope", "owner"), ("kind", ""), ("owner__isnull", False)),
                    models.Q(("scope", "every_owner"), ("kind", ""), ("owner__isnull", True)),
                    _connector="OR",
                ),
                name="limit_scope_fields",
            ),
        ),
    ]
