"""The minimal DRF service TaskFlow's API is compared with: the project's DRF defaults
(authentication, including API keys, throttling, JSON rendering, cursor pagination) around
one insert or one page of one table."""

from rest_framework import generics, serializers

from .models import Row


class RowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Row
        fields = ["id", "owner_id", "kind", "title", "status", "payload", "created_at"]
        read_only_fields = ["id", "owner_id", "status", "created_at"]


class RowListCreateView(generics.ListCreateAPIView):
    serializer_class = RowSerializer
    queryset = Row.objects.all()

    def perform_create(self, serializer):
        serializer.save(owner_id=self.request.user.pk)
