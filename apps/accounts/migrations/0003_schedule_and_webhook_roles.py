"""Schedules and webhooks join the roles: Operators run, pause and resume schedules; both
groups may look at schedules and webhook deliveries."""

import importlib

from django.db import migrations

roles = importlib.import_module("apps.accounts.migrations.0002_roles")

VIEW = [
    ("tasks", "schedule", "view_schedule"),
    ("webhooks", "webhookendpoint", "view_webhookendpoint"),
    ("webhooks", "webhookdelivery", "view_webhookdelivery"),
]
ACT = [("tasks", "schedule", "run_schedule")]
ADDED = {roles.OPERATORS: VIEW + ACT, roles.VIEWERS: VIEW}


def add_permissions(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    for label in ("tasks", "webhooks"):
        create_permissions(global_apps.get_app_config(label), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    for group_name, wanted in ADDED.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        permissions = [roles._permission(apps, *spec) for spec in wanted]
        group.permissions.add(*[permission for permission in permissions if permission is not None])


def remove_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    codenames = [codename for _, _, codename in VIEW + ACT]
    for group in Group.objects.filter(name__in=ADDED):
        group.permissions.remove(*Permission.objects.filter(codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_roles"),
        ("tasks", "0005_task_files"),
        ("webhooks", "0001_initial"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
