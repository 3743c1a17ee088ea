"""Concurrency limits join the roles: Operators edit them (live, no restart); Viewers see them."""

import importlib

from django.db import migrations

roles = importlib.import_module("apps.accounts.migrations.0002_roles")

VIEW = [("tasks", "concurrencylimit", "view_concurrencylimit")]
EDIT = [
    ("tasks", "concurrencylimit", "add_concurrencylimit"),
    ("tasks", "concurrencylimit", "change_concurrencylimit"),
    ("tasks", "concurrencylimit", "delete_concurrencylimit"),
]
ADDED = {roles.OPERATORS: VIEW + EDIT, roles.VIEWERS: VIEW}


def add_permissions(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    create_permissions(global_apps.get_app_config("tasks"), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    for group_name, wanted in ADDED.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        permissions = [roles._permission(apps, *spec) for spec in wanted]
        group.permissions.add(*[permission for permission in permissions if permission is not None])


def remove_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    codenames = [codename for _, _, codename in VIEW + EDIT]
    for group in Group.objects.filter(name__in=ADDED):
        group.permissions.remove(*Permission.objects.filter(codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_quota"),
        ("tasks", "0011_concurrency_limit"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
