from celery import shared_task

from . import services

# Deliveries have a queue and worker processes of their own (the Procfile's `webhooks`): a
# slow endpoint delays its own deliveries, never a task's slot.
QUEUE = "webhooks"


@shared_task(name="taskflow.send_webhook", ignore_result=True, queue=QUEUE)
def send_webhook(delivery_id: str) -> str | None:
    return services.delivery_send(delivery_id=delivery_id)


@shared_task(name="taskflow.send_due_webhooks", ignore_result=True, queue=QUEUE)
def send_due_webhooks() -> int:
    return services.send_due_deliveries()
