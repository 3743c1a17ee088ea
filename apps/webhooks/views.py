from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.serializers import ReasonSerializer, StrictSerializer
from apps.core.viewsets import OwnedObjectViewSetMixin

from . import services
from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .serializers import (
    CallbackSecretSerializer,
    DeliverySerializer,
    EndpointInputSerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
)


def _deliveries(queryset):
    attempts = Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number"))
    return queryset.select_related("owner").prefetch_related(attempts)


class EndpointViewSet(OwnedObjectViewSetMixin, viewsets.ModelViewSet):
    """Your webhook endpoints. The signing secret is shown on create and rotate only."""

    serializer_class = EndpointSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    staff_permissions = {
        "partial_update": "webhooks.change_webhookendpoint",
        "rotate_secret": "webhooks.change_webhookendpoint",
        "destroy": "webhooks.delete_webhookendpoint",
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookEndpoint.objects.none()
        queryset = WebhookEndpoint.objects.select_related("owner")
        return queryset if self.request.user.is_staff else queryset.filter(owner=self.request.user)

    @extend_schema(request=EndpointInputSerializer, responses={201: EndpointWithSecretSerializer})
    def create(self, request):
        data = EndpointInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(owner=request.user, **data.validated_data)
        return Response(EndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EndpointInputSerializer, responses=EndpointSerializer)
    def partial_update(self, request, pk=None):
        data = EndpointInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        endpoint = self.get_object()
        endpoint = self.audited(
            endpoint,
            action="webhook.change",
            write=lambda: services.endpoint_update(endpoint=endpoint, **data.validated_data),
        )
        return Response(EndpointSerializer(endpoint).data)

    def perform_destroy(self, instance):
        self.audited(
            instance,
            action="webhook.delete",
            write=lambda: services.endpoint_delete(endpoint=instance),
        )

    @extend_schema(request=ReasonSerializer, responses=EndpointWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        endpoint = self.reasoned_action(
            action="webhook.rotate_secret", write=lambda endpoint: services.endpoint_rotate_secret(endpoint=endpoint)
        )
        return Response(EndpointWithSecretSerializer(endpoint).data)

    @extend_schema(responses=DeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        endpoint = self.get_object()
        page = self.paginate_queryset(_deliveries(endpoint.deliveries.all()))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class DeliveryViewSet(
    OwnedObjectViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Every delivery of your endpoints and task callbacks, with each attempt."""

    serializer_class = DeliverySerializer
    # The admin's redeliver action asks for "change" too.
    staff_permissions = {"redeliver": "webhooks.change_webhookdelivery"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookDelivery.objects.none()
        queryset = _deliveries(WebhookDelivery.objects.all())
        return queryset if self.request.user.is_staff else queryset.filter(owner=self.request.user)

    @extend_schema(request=ReasonSerializer, responses={201: DeliverySerializer})
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        copy = self.reasoned_action(
            action="delivery.redeliver", write=lambda delivery: services.delivery_redeliver(delivery=delivery)
        )
        return Response(DeliverySerializer(copy).data, status=status.HTTP_201_CREATED)


class CallbackSecretView(APIView):
    """The secret that signs your tasks' one-off callback_url deliveries."""

    @extend_schema(responses=CallbackSecretSerializer)
    def get(self, request):
        return Response(CallbackSecretSerializer(services.callback_secret_for(request.user)).data)

    @extend_schema(request=None, responses=CallbackSecretSerializer)
    def post(self, request):
        """Rotate it: deliveries signed from now on use the new secret."""
        StrictSerializer(data=request.data).is_valid(raise_exception=True)  # no fields: any is a typo
        return Response(CallbackSecretSerializer(services.callback_secret_rotate(owner=request.user)).data)
