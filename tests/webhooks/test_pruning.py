"""Delivery records are kept for WEBHOOK_DELIVERY_RETENTION_DAYS, then pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.integrations.models import WebhookDelivery
from apps.integrations.tasks import SWEEP_QUEUE, prune_webhook_deliveries
from scheduler.jobs import load_jobs

pytestmark = pytest.mark.django_db(transaction=True)


def delivery(guid: str, *, age: timedelta) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        guid=guid, event="pull_request", action="opened", received_at=timezone.now() - age
    )


def test_prune_deletes_deliveries_older_than_the_retention_only(stub_broker, stub_worker):
    retention = timedelta(days=settings.WEBHOOK_DELIVERY_RETENTION_DAYS)
    delivery("old", age=retention + timedelta(minutes=1))
    delivery("recent", age=retention - timedelta(minutes=1))

    prune_webhook_deliveries.send()
    stub_broker.join(SWEEP_QUEUE, timeout=30_000)

    assert list(WebhookDelivery.objects.values_list("guid", flat=True)) == ["recent"]


def test_prune_runs_on_the_schedule():
    jobs = load_jobs(settings.SCHEDULED_TASKS)

    assert "prune-webhook-deliveries" in {job.job_id for job in jobs}
