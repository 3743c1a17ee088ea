from drf_spectacular.contrib.rest_framework_simplejwt import (
    SimpleJWTScheme,
    TokenObtainPairSerializerExtension,
    TokenRefreshSerializerExtension,
)
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class JWTAuthenticationScheme(SimpleJWTScheme):
    """drf-spectacular's description of simplejwt's tokens (`jwtAuth`), for our caching subclass."""

    target_class = "apps.accounts.authentication.JWTAuthentication"


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: a key created under /api/auth/api-keys/.",
        }


def _strict_request(schema: dict, direction: str) -> dict:
    if direction == "request":
        schema["additionalProperties"] = False
    return schema


class TokenObtainPairScheme(TokenObtainPairSerializerExtension):
    """drf-spectacular's description of simplejwt's serializer, for our strict subclass."""

    target_class = "apps.accounts.serializers.TokenObtainPairSerializer"

    def map_serializer(self, auto_schema, direction):
        return _strict_request(super().map_serializer(auto_schema, direction), direction)


class TokenRefreshScheme(TokenRefreshSerializerExtension):
    target_class = "apps.accounts.serializers.TokenRefreshSerializer"

    def map_serializer(self, auto_schema, direction):
        return _strict_request(super().map_serializer(auto_schema, direction), direction)
