"""Built-in task kinds: demos that exercise the engine, and an email to the owner."""

import os
import signal
import time

from django.conf import settings
from django.core.mail import send_mail
from rest_framework import serializers

from .registry import task_kind


class NoopPayload(serializers.Serializer):
    echo = serializers.JSONField(required=False, help_text="Returned unchanged as the result.")


# Free-form: benchmarks and smoke tests send whatever payload they like, kept as sent.
@task_kind("demo.noop", payload=NoopPayload, max_retries=0, timeout=30, extra_keys=True)
def noop(ctx, payload):
    """Does nothing and returns at once; for benchmarks and smoke tests. Takes any other keys."""
    return {"echo": payload.get("echo")}


class SleepPayload(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=3600, default=5)
    steps = serializers.IntegerField(min_value=1, max_value=1000, default=10)


@task_kind("demo.sleep", payload=SleepPayload, max_retries=3, timeout=3600)
def sleep(ctx, payload):
    """Sleeps in steps, reporting progress after each; stops early when cancelled."""
    step = payload["seconds"] / payload["steps"]
    for done in range(1, payload["steps"] + 1):
        ctx.check_cancelled()
        time.sleep(step)
        ctx.progress(100 * done / payload["steps"], f"step {done} of {payload['steps']}")
    return {"slept": payload["seconds"], "steps": payload["steps"]}


class FailPayload(serializers.Serializer):
    failures = serializers.IntegerField(min_value=0, max_value=100, default=1)
    message = serializers.CharField(max_length=200, default="demo failure")


class DemoFailure(Exception):
    pass


@task_kind("demo.fail", payload=FailPayload, max_retries=3, timeout=30, retry_backoff=1.0)
def fail(ctx, payload):
    """Fails its first N attempts, then succeeds; for retry demos and tests."""
    if ctx.attempt <= payload["failures"]:
        raise DemoFailure(f"{payload['message']} (attempt {ctx.attempt} of {payload['failures']} failing)")
    return {"succeeded_on_attempt": ctx.attempt}


@task_kind("demo.crash", max_retries=1, timeout=30, retry_backoff=1.0, staff_only=True)
def crash(ctx, payload):
    """Kills its own worker process (a poison task); staff only."""
    os.kill(os.getpid(), signal.SIGKILL)


class EmailPayload(serializers.Serializer):
    subject = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=20000)


@task_kind("notify.email", payload=EmailPayload, max_retries=5, timeout=60, retry_backoff=10.0)
def email_owner(ctx, payload):
    """Sends an email to the task's owner."""
    sent = send_mail(
        subject=payload["subject"],
        message=payload["body"],
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[ctx.owner.email],
    )
    return {"sent": sent, "to": ctx.owner.email}
