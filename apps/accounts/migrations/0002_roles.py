"""Groups for the admin: "Operators" act on tasks, "Viewers" only look.

Permissions are normally created after `migrate` finishes (post_migrate), so they are
created here first for the apps the groups need. Models of apps this migration does not
depend on (files, celery results) get their view permission only when the app is installed.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

OPERATORS = "Operators"
VIEWERS = "Viewers"

VIEW = [
    ("tasks", "task", "view_task"),
    ("tasks", "taskevent", "view_taskevent"),
    ("core", "auditentry", "view_auditentry"),
    ("files", "storedfile", "view_storedfile"),
    ("django_celery_results", "taskresult", "view_taskresult"),
]
ACT = [
    ("tasks", "task", "retry_task"),
    ("tasks", "task", "cancel_task"),
]
ROLES = {OPERATORS: VIEW + ACT, VIEWERS: VIEW}


def _permission(apps, app_label, model_name, codename):
    """The permission row, created like post_migrate would; None when the model is not installed."""
    try:
        model = global_apps.get_model(app_label, model_name)
    except LookupError:
        return None
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=model_name)
    names = dict(model._meta.permissions)
    name = names.get(codename) or f"Can view {model._meta.verbose_name_raw}"
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def create_roles(apps, schema_editor):
    for label in ("tasks", "core", "django_celery_results"):
        create_permissions(global_apps.get_app_config(label), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    for group_name, wanted in ROLES.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        permissions = [_permission(apps, *spec) for spec in wanted]
        group.permissions.add(*[permission for permission in permissions if permission is not None])


def delete_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("tasks", "0001_initial"),
        ("core", "0001_initial"),
        ("django_celery_results", "0014_alter_taskresult_status"),
    ]

    operations = [migrations.RunPython(create_roles, delete_roles)]
