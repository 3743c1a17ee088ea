"""What the owned-object viewsets share: who may write, and the audit of staff writes."""

from collections.abc import Callable
from typing import TypeVar

from rest_framework.permissions import IsAuthenticated

from .permissions import OwnerOrStaffWithPermission
from .serializers import ReasonSerializer
from .services import audited_write

T = TypeVar("T")


class OwnedObjectViewSetMixin:
    """Owners change their objects; staff need the permission the viewset names in
    `staff_permissions` for each writing action, and their writes are audited."""

    permission_classes = [IsAuthenticated, OwnerOrStaffWithPermission]
    staff_permissions: dict[str, str] = {}

    def audited(self, obj, *, action: str, write: Callable[[], T], reason: str = "") -> T:
        return audited_write(user=self.request.user, obj=obj, action=action, reason=reason, write=write)

    def reasoned_action(self, *, action: str, write: Callable[[object], T]) -> T:
        """A POST action on one object whose body holds at most a `reason`: the body checked,
        the object looked up (permission included), the write audited for staff."""
        data = ReasonSerializer(data=self.request.data)
        data.is_valid(raise_exception=True)
        obj = self.get_object()
        return self.audited(obj, action=action, reason=data.validated_data["reason"], write=lambda: write(obj))
