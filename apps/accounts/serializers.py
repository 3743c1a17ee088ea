from rest_framework import serializers
from rest_framework_simplejwt import serializers as jwt_serializers

from apps.core.serializers import StrictInputMixin, StrictSerializer

from .models import ApiKey, User


class RegisterInputSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, max_length=128, style={"input_type": "password"})
    full_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "full_name", "is_staff", "date_joined"]
        read_only_fields = ["id", "email", "is_staff", "date_joined"]


class UserUpdateSerializer(StrictSerializer):
    full_name = serializers.CharField(max_length=150, allow_blank=True)


class LogoutSerializer(StrictSerializer):
    refresh = serializers.CharField()


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The key itself. Shown only in this response.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


# simplejwt's, strict like every input serializer; named as theirs so that the OpenAPI
# components keep their names (apps/accounts/schema.py describes them).
class TokenObtainPairSerializer(StrictInputMixin, jwt_serializers.TokenObtainPairSerializer):
    """Refuses fields other than the credentials."""


class TokenRefreshSerializer(StrictInputMixin, jwt_serializers.TokenRefreshSerializer):
    """Refuses fields other than `refresh` (`access` is read-only)."""
