from rest_framework import serializers

from apps.core.api_errors import field_validator
from apps.core.serializers import StrictSerializer

from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent, all_events
from .services import validate_url


class EndpointInputSerializer(StrictSerializer):
    url = serializers.URLField(max_length=2000, validators=[field_validator(validate_url)])
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.choices), allow_empty=False, default=all_events
    )
    enabled = serializers.BooleanField(default=True)


class EndpointSerializer(serializers.ModelSerializer):
    owner = serializers.EmailField(source="owner.email", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "owner",
            "url",
            "description",
            "events",
            "enabled",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown only now; sign checks use it.")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "created_at", "status_code", "duration_ms", "response_snippet", "error"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    owner = serializers.EmailField(source="owner.email", read_only=True)
    endpoint = serializers.UUIDField(source="endpoint_id", read_only=True, allow_null=True)
    task = serializers.UUIDField(source="task_id", read_only=True, allow_null=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "owner",
            "endpoint",
            "task",
            "url",
            "event",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "finished_at",
            "body",
            "attempt_log",
        ]
        read_only_fields = fields


class CallbackSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(read_only=True)
