"""A real worker process with WORKER_METRICS on: its exporter (Dramatiq's, one per worker
group) serves Dramatiq's message metrics and the sync's own counters recorded in worker
threads; with it off, or outside a worker process, the middleware does nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta

import dramatiq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.integrations.metrics import (
    WorkerMetrics,
    remove_files_of_gone_processes,
)
from apps.integrations.models import TrackedRepository
from apps.integrations.services.pacing import token_digest
from devtools.processes import stop_process as stop
from tests import builders
from tests.processes import DEADLINE, manage, process_env, start_worker, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return answer.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def value(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.usefixtures("process_logs")
def test_worker_exporter_shows_dramatiq_and_sync_metrics_after_a_sync(
    emulator, redis_url, days_ago, tmp_path
):
    emulator.generate_pulls("acme/api", 30, start=days_ago(10), step=timedelta(hours=3))
    repo = builders.tracked_repo(emulator, "acme/api")
    port = free_port()
    env = process_env(
        emulator,
        REDIS_URL=redis_url,
        WORKER_METRICS="true",
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(port),
        dramatiq_prom_db=str(tmp_path / "prometheus"),
    )
    log = tmp_path / "worker.log"
    process = start_worker(env, log)
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(
            lambda: TrackedRepository.objects.get(pk=repo.pk).last_sync_at is not None,
            timeout=DEADLINE,
            what="the sync",
            log=log,
        )
        # Counted once the message is done, just after the row says so.
        wait_until(
            lambda: (
                (text := scrape(port)) is not None
                and value(text, "dramatiq_messages_total", actor_name="sync_repository") == 1
            ),
            timeout=DEADLINE,
            what="the exporter to count the sync message",
            log=log,
        )
        text = scrape(port)
    finally:
        stop(process)

    assert text is not None
    assert value(text, "dramatiq_messages_total", actor_name="sync_all_repositories") == 1
    assert value(text, "dramatiq_message_duration_milliseconds_count") == 2
    assert value(text, "dramatiq_message_duration_milliseconds_sum") > 0
    assert value(text, "tformance_syncs_total", outcome="synced") == 1
    assert value(text, "tformance_github_requests_total", kind="list_issues", status="200") >= 1
    fingerprint = token_digest(builders.TOKEN)
    assert value(text, "tformance_github_rate_limit_remaining", token=fingerprint) > 0
    assert builders.TOKEN not in text


def test_without_worker_metrics_a_booted_worker_process_forks_no_exporter(settings, stub_broker):
    settings.WORKER_METRICS = False
    middleware = WorkerMetrics()

    middleware.after_process_boot(stub_broker)

    assert middleware.forks == []
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_worker_metrics_lets_messages_through_where_no_worker_process_booted(
    stub_broker, stub_worker
):
    assert any(isinstance(m, WorkerMetrics) for m in stub_broker.middleware)
    done = []

    @dramatiq.actor(broker=stub_broker, queue_name="metrics-test")
    def worker_metrics_test_actor() -> None:
        done.append(True)

    worker_metrics_test_actor.send()
    stub_broker.join("metrics-test")

    assert done == [True]


def test_metric_files_of_gone_processes_are_removed(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone_pid = int(gone.stdout)
    (tmp_path / f"counter_{gone_pid}.db").write_bytes(b"")
    (tmp_path / f"histogram_{gone_pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"")

    assert remove_files_of_gone_processes(tmp_path) == 2
    assert [path.name for path in tmp_path.iterdir()] == [f"counter_{os.getpid()}.db"]
