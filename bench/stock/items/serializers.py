from rest_framework import serializers

from .models import Item


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ["id", "owner", "kind", "title", "status", "payload", "created_at"]
        read_only_fields = ["owner", "status"]
