"""API permissions shared by the apps' viewsets."""

from rest_framework.permissions import SAFE_METHODS, BasePermission


class OwnerOrStaffWithPermission(BasePermission):
    """Owners may change their own objects; anyone else needs the model permission the admin uses.

    The viewset names the permission of each writing action in `staff_permissions`
    (`{"retry": "tasks.retry_task", "destroy": "tasks.delete_schedule"}`); a writing action
    it does not name is the owner's alone. Reads are left to `get_queryset`, which already
    hides other users' objects from non-staff (a 404): only staff ever reach a 403 here, on
    an object they may see but not change — a Viewer, or an Operator outside their role.
    DRF checks this in `get_object()`, so list and create endpoints are not concerned.
    """

    def has_object_permission(self, request, view, obj):
        if request.method in SAFE_METHODS or obj.owner_id == request.user.id:
            return True
        required = getattr(view, "staff_permissions", {}).get(view.action)
        if required is not None and request.user.has_perm(required):
            return True
        name = obj._meta.verbose_name
        if required is None:
            self.message = f"Only the owner of this {name} may do this."
        else:
            self.message = f"This {name} belongs to another user: this needs the {required} permission."
        return False
