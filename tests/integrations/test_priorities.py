"""Interactive syncs ("sync now" in the admin, ``sync_repo --enqueue``) go ahead of bulk work:
their own queue and actor (``sync_repository_now``), a higher priority, and a kind that their
continuations and deferrals keep."""

from __future__ import annotations

import threading
from datetime import timedelta

import dramatiq
import pytest

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.tasks import (
    INTERACTIVE_QUEUE,
    QUEUE,
    enqueue_repository_syncs,
    sync_repository_now,
)
from devtools.processes import stop_process as stop
from tests import builders
from tests.processes import DEADLINE, manage, process_env, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REPO = "acme/widgets"


def messages_in(broker, queue: str) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(data) for data in broker.queues[queue].queue]


def status_of(repo: TrackedRepository) -> str:
    return TrackedRepository.objects.values_list("sync_status", flat=True).get(pk=repo.pk)


run = builders.run_command


def test_interactive_sync_overtakes_a_backlog_of_bulk_syncs_on_one_worker(emulator, stub_broker):
    # Given 30 bulk syncs queued, on a worker with one thread busy with the first of them
    backlog = [builders.tracked_repo(emulator, f"acme/bulk-{i}") for i in range(30)]
    urgent = builders.tracked_repo(emulator, "acme/urgent")
    listed: list[str] = []
    release = threading.Event()

    def hold_the_first_sync(request) -> None:
        if request.path.endswith("/issues"):
            listed.append(request.path.split("/")[3])
            release.wait(60)

    emulator.add_hook(hold_the_first_sync)
    enqueue_repository_syncs(tracked_repo_ids=[repo.pk for repo in backlog])
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        wait_until(lambda: bool(listed), timeout=60, what="the first bulk sync")

        # When an operator asks for a sync, and the worker has it in hand
        enqueue_repository_syncs(tracked_repo_ids=[urgent.pk], interactive=True)
        wait_until(
            lambda: any(
                item.message.actor_name == "sync_repository_now"
                for item in list(worker.work_queue.queue)
            ),
            timeout=60,
            what="the worker to fetch the urgent message",
        )
        release.set()
        wait_until(lambda: status_of(urgent) == "idle", timeout=60, what="the urgent sync")
    finally:
        release.set()
        worker.stop()

    # Then it ran next: ahead of the bulk message the worker had already fetched (its
    # prefetch), and of the 28 still in the queue
    assert listed[:2] == ["bulk-0", "urgent"]


def test_interactive_continuation_stays_interactive(emulator, stub_broker, settings, days_ago):
    # A slice budget of 0: the sync checkpoints after its first page and continues
    settings.SYNC_MESSAGE_TIME_BUDGET_SECONDS = 0
    emulator.generate_pulls(REPO, 150, start=days_ago(20), step=timedelta(hours=2))
    repo = builders.tracked_repo(emulator, REPO)

    sync_repository_now(repo.pk)

    (continuation,) = messages_in(stub_broker, INTERACTIVE_QUEUE)
    assert continuation.actor_name == "sync_repository_now"
    assert list(continuation.args) == [repo.pk]
    assert messages_in(stub_broker, QUEUE) == []


# -- sync_repo --enqueue ---------------------------------------------------------------------


def test_sync_repo_enqueue_sends_one_interactive_message_and_returns(emulator, stub_broker):
    repo = builders.tracked_repo(emulator, REPO)

    code, out, err = run("sync_repo", REPO, "--enqueue")

    assert (code, err) == (0, "")
    assert out == f"Queued a sync of {REPO} ahead of bulk syncs; a worker runs it.\n"
    (message,) = messages_in(stub_broker, INTERACTIVE_QUEUE)
    assert (message.actor_name, message.args[0], message.kwargs) == (
        "sync_repository_now",
        repo.pk,
        {"full": False},
    )
    assert messages_in(stub_broker, QUEUE) == []
    assert emulator.requests == []  # nothing synced in this process
    assert status_of(repo) == "queued"


def test_sync_repo_enqueue_full_sends_a_full_resync(emulator, stub_broker):
    builders.tracked_repo(emulator, REPO)

    code, out, _ = run("sync_repo", REPO, "--enqueue", "--full")

    assert code == 0 and out.startswith(f"Queued a full resync of {REPO}")
    (message,) = messages_in(stub_broker, INTERACTIVE_QUEUE)
    assert message.kwargs == {"full": True}


def test_sync_repo_enqueue_with_the_queue_unreachable_fails_with_one_line(
    emulator, use_redis_broker
):
    repo = builders.tracked_repo(emulator, REPO)
    use_redis_broker("redis://127.0.0.1:1/0")  # nothing listens there

    code, out, err = run("sync_repo", REPO, "--enqueue")

    assert (code, out) == (1, "")
    assert err == (
        "error: cannot reach the task queue at REDIS_URL: ConnectionError; nothing was queued\n"
    )
    assert status_of(repo) == "idle"


def test_sync_repo_enqueue_of_an_inactive_repository_fails_and_sends_nothing(emulator, stub_broker):
    repo = builders.tracked_repo(emulator, REPO)
    TrackedRepository.objects.filter(pk=repo.pk).update(is_active=False)

    code, _, err = run("sync_repo", REPO, "--enqueue")

    assert code == 1 and err.startswith(f"error: {REPO}: the repository is inactive")
    assert messages_in(stub_broker, INTERACTIVE_QUEUE) == []


def test_sync_repo_enqueue_refuses_flags_only_an_in_process_sync_has(emulator, stub_broker):
    builders.tracked_repo(emulator, REPO)

    code, _, err = run("sync_repo", REPO, "--enqueue", "--days-back", "7")

    assert code == 1
    assert err == "error: --enqueue takes --full only (not --days-back or --all-history)\n"
    assert messages_in(stub_broker, INTERACTIVE_QUEUE) == []


@pytest.mark.slow
@pytest.mark.usefixtures("process_logs")
def test_sync_repo_enqueue_is_run_by_a_plain_rundramatiq_worker(
    emulator, redis_url, days_ago, tmp_path
):
    # The interactive queue needs no -Q: a worker started as in production consumes it
    emulator.generate_pulls(REPO, 20, start=days_ago(5), step=timedelta(hours=3))
    repo = builders.tracked_repo(emulator, REPO)
    env = process_env(emulator, REDIS_URL=redis_url)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        sent = manage(emulator, "sync_repo", REPO, "--enqueue", REDIS_URL=redis_url)
        assert (sent.returncode, sent.stderr) == (0, "")

        wait_until(
            lambda: (
                TrackedRepository.objects.filter(pk=repo.pk, last_sync_at__isnull=False)
                .exclude(sync_status="syncing")
                .exists()
            ),
            timeout=DEADLINE,
            what="the interactive sync",
            log=log,
        )
    finally:
        stop(worker)

    assert status_of(repo) == "idle"
    assert PullRequest.objects.filter(tracked_repo=repo).count() == 20
