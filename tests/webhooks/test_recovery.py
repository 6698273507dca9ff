"""Recovering failed webhook deliveries: the emulator delivers to a stub receiver over real
HTTP, the recovery pass lists the hook's deliveries and asks GitHub to redeliver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import dramatiq
import pytest
from django.conf import settings

from apps.integrations.models import TrackedRepository
from apps.integrations.services.webhook_recovery import (
    CHECK_INTERVAL,
    webhook_deliveries_recover,
)
from apps.integrations.services.webhook_registration import webhook_register
from apps.integrations.tasks import QUEUE, recover_webhook_deliveries
from tests import builders
from tests.webhooks.stub_receiver import StubReceiver

pytestmark = pytest.mark.django_db

REPO = "acme/widgets"
SECRET = "s3cret-current-0001"


@pytest.fixture
def receiver() -> Iterator[StubReceiver]:
    with StubReceiver() as stub:
        yield stub


@pytest.fixture
def repo(emulator, receiver, settings) -> TrackedRepository:
    settings.GITHUB_WEBHOOK_SECRETS = [SECRET]
    tracked = builders.tracked_repo(emulator, REPO)
    webhook_register(tracked_repo=tracked, url=receiver.url)
    return tracked


def failed_delivery(emulator, count: int = 1) -> None:
    """``count`` pull requests opened while the receiver is down."""
    emulator.webhooks.set_deliveries_enabled(False)
    for _ in range(count):
        emulator.add_pull(REPO)
    emulator.webhooks.wait_idle()
    emulator.webhooks.set_deliveries_enabled(True)


def recover(emulator):
    """One scheduled pass: the schedule's interval after the previous one."""
    result = webhook_deliveries_recover(now=emulator.advance(CHECK_INTERVAL))
    emulator.webhooks.wait_idle()
    return result


def fresh(repo: TrackedRepository) -> TrackedRepository:
    return TrackedRepository.objects.get(pk=repo.pk)


def test_a_delivery_that_failed_while_the_receiver_was_down_is_redelivered(
    emulator, receiver, repo
):
    failed_delivery(emulator)
    [failed] = emulator.webhooks.deliveries(REPO)

    result = recover(emulator)

    assert result.redelivered == 1 and result.to_sync == []
    assert [r.headers["x-github-delivery"] for r in receiver.received] == [failed.guid]
    assert emulator.webhooks.deliveries(REPO)[-1].redelivery


def test_a_delivery_whose_redelivery_failed_too_is_counted_and_its_repository_synced(
    emulator, repo
):
    failed_delivery(emulator)
    emulator.webhooks.set_deliveries_enabled(False)
    recover(emulator)

    result = recover(emulator)

    assert (result.redelivered, result.unrecoverable, result.to_sync) == (0, 1, [repo.pk])
    assert fresh(repo).webhook_failed_deliveries == 1


def test_a_failed_delivery_is_redelivered_only_once(emulator, repo):
    failed_delivery(emulator)
    emulator.webhooks.set_deliveries_enabled(False)

    for _ in range(3):
        recover(emulator)

    assert emulator.count_requests("/attempts", method="POST") == 1


def test_successful_deliveries_cost_one_listing_and_no_redelivery(emulator, repo):
    emulator.add_pull(REPO)
    emulator.webhooks.wait_idle()
    emulator.clear_requests()

    result = recover(emulator)

    assert (result.hooks_checked, result.redelivered, result.unrecoverable) == (1, 0, 0)
    assert [r.path for r in emulator.requests] == [
        f"/repos/{REPO}/hooks/{repo.webhook_id}/deliveries"
    ]


def test_the_pass_remembers_the_newest_delivery_it_examined(emulator, repo):
    emulator.add_pull(REPO)
    emulator.webhooks.wait_idle()
    [delivery] = emulator.webhooks.deliveries(REPO)

    recover(emulator)

    repo = fresh(repo)
    assert repo.webhook_deliveries_cursor == str(delivery.id)
    assert repo.webhook_checked_at is not None


def test_a_delivery_behind_the_cursor_is_not_examined_again(emulator, repo):
    failed_delivery(emulator)
    TrackedRepository.objects.filter(pk=repo.pk).update(
        webhook_deliveries_cursor=str(emulator.webhooks.deliveries(REPO)[-1].id)
    )

    result = recover(emulator)

    assert result.redelivered == 0
    assert emulator.count_requests("/attempts", method="POST") == 0


def test_deliveries_are_paged_with_the_cursor_github_returns(emulator, repo):
    failed_delivery(emulator, count=120)
    emulator.clear_requests()

    result = recover(emulator)

    listings = [r for r in emulator.requests if r.path.endswith("/deliveries")]
    assert [bool(r.query.get("cursor")) for r in listings] == [False, True]
    assert result.redelivered == 120


def test_deliveries_older_than_githubs_window_are_left_to_the_sync(emulator, repo):
    failed_delivery(emulator)
    emulator.advance(timedelta(days=3, minutes=1))

    result = recover(emulator)

    assert (result.redelivered, result.unrecoverable) == (0, 0)
    assert emulator.count_requests("/attempts", method="POST") == 0


def test_a_hook_deleted_on_github_becomes_none_and_its_repository_is_synced(emulator, repo):
    emulator.webhooks.delete_hook(REPO, repo.webhook_id)

    result = recover(emulator)

    repo = fresh(repo)
    assert (repo.webhook_id, result.to_sync) == (None, [repo.pk])
    assert "register_webhooks" in repo.webhook_error


def test_a_rate_limited_token_stops_its_pass_and_the_next_pass_resumes(emulator, repo):
    failed_delivery(emulator)
    emulator.set_rate_limit(builders.TOKEN, remaining=0)

    limited = recover(emulator)
    cursor_after_limit = fresh(repo).webhook_deliveries_cursor
    emulator.set_rate_limit(builders.TOKEN, remaining=5000)
    resumed = recover(emulator)

    assert (limited.rate_limited_integrations, limited.redelivered, cursor_after_limit) == (
        1,
        0,
        "",
    )
    assert resumed.redelivered == 1


def test_a_rate_limit_skips_the_other_hooks_of_the_same_token(emulator, receiver, repo):
    webhook_register(tracked_repo=builders.tracked_repo(emulator, "acme/other"), url=receiver.url)
    emulator.set_rate_limit(builders.TOKEN, remaining=0)
    emulator.clear_requests()

    recover(emulator)

    assert len(emulator.requests) == 1


def test_a_token_with_many_hooks_has_each_checked_less_often(emulator, receiver, repo):
    webhook_register(tracked_repo=builders.tracked_repo(emulator, "acme/other"), url=receiver.url)
    # Two hooks at 12 listings an hour: each is due every 10 minutes, not every 5.
    passes = [
        webhook_deliveries_recover(now=emulator.now() + timedelta(minutes=m), listings_per_hour=12)
        for m in (0, 5, 11)
    ]

    assert [p.hooks_checked for p in passes] == [2, 0, 2]


def test_inactive_repositories_are_not_checked(emulator, repo):
    TrackedRepository.objects.filter(pk=repo.pk).update(is_active=False)
    emulator.clear_requests()

    result = recover(emulator)

    assert result.hooks_checked == 0 and emulator.requests == []


def test_the_job_enqueues_an_incremental_sync_for_what_could_not_be_recovered(
    emulator, stub_broker, repo
):
    failed_delivery(emulator)
    emulator.webhooks.set_deliveries_enabled(False)
    recover(emulator)
    emulator.webhooks.wait_idle()
    # Due again: the job's pass runs on the real clock, behind the emulator's.
    TrackedRepository.objects.filter(pk=repo.pk).update(webhook_checked_at=None)

    recover_webhook_deliveries()

    [message] = [dramatiq.Message.decode(m) for m in stub_broker.queues[QUEUE].queue]
    assert (message.actor_name, message.args, message.kwargs) == (
        "sync_repository",
        (repo.pk,),
        {"full": False},
    )


def test_a_sync_the_job_could_not_send_is_left_noted_for_the_sweep(emulator, repo):
    failed_delivery(emulator)
    emulator.webhooks.set_deliveries_enabled(False)
    recover(emulator)

    recover(emulator)

    assert fresh(repo).sync_requested_at is not None


def test_the_recovery_job_is_scheduled_every_five_minutes():
    [entry] = [
        task
        for task in settings.SCHEDULED_TASKS.values()
        if task["task"] == "apps.integrations.tasks.recover_webhook_deliveries"
    ]
    assert entry["schedule"] == timedelta(minutes=5)


# -- end to end: the emulator delivers to the product's receiver under gunicorn ---------------


@pytest.fixture
def receiver_server(emulator, process_logs, settings):
    """The product's web application (the webhook receiver) under gunicorn, on the test
    database; ``up()`` / ``down()`` start and stop it on one port."""
    import requests

    from devtools.processes import free_port, port_is_open, start_web_server, stop_process
    from tests.processes import DEADLINE, process_env, wait_until

    settings.GITHUB_WEBHOOK_SECRETS = [SECRET]
    port = free_port()
    log = process_logs / "gunicorn.log"
    env = process_env(emulator, GITHUB_WEBHOOK_SECRET=SECRET, ALLOWED_HOSTS="127.0.0.1")

    class Server:
        url = f"http://127.0.0.1:{port}/webhooks/github/"
        process = None

        def up(self) -> None:
            self.process = start_web_server(port=port, env=env, log_path=log, workers=2)
            # The port opens before a worker has loaded Django: wait for an answer.
            wait_until(self.answers, timeout=DEADLINE, what="gunicorn", log=log)

        def answers(self) -> bool:
            try:
                return requests.get(self.url, timeout=5).status_code == 405
            except requests.RequestException:
                return False

        def down(self) -> None:
            stop_process(self.process)
            wait_until(lambda: not port_is_open(port), timeout=DEADLINE, what="gunicorn gone")

    server = Server()
    server.up()
    yield server
    if server.process is not None:
        stop_process(server.process)


def pull_titles(repo: TrackedRepository) -> dict[int, str]:
    from apps.integrations.models import PullRequest

    return dict(PullRequest.objects.filter(tracked_repo=repo).values_list("number", "title"))


@pytest.mark.django_db(transaction=True)
def test_an_edit_on_github_reaches_the_database_through_the_receiver(emulator, receiver_server):
    from tests.processes import DEADLINE, wait_until

    tracked = builders.tracked_repo(emulator, REPO)
    webhook_register(tracked_repo=tracked, url=receiver_server.url)

    pull = emulator.add_pull(REPO, title="Pushed, not polled")

    wait_until(
        lambda: pull_titles(tracked) == {pull.number: "Pushed, not polled"},
        timeout=DEADLINE,
        what="the webhook's row",
    )
    builders.assert_matches_github(emulator, tracked)


@pytest.mark.django_db(transaction=True)
def test_a_delivery_lost_while_the_receiver_was_down_is_recovered_by_the_job(
    emulator, receiver_server
):
    from tests.processes import DEADLINE, wait_until

    tracked = builders.tracked_repo(emulator, REPO)
    webhook_register(tracked_repo=tracked, url=receiver_server.url)
    receiver_server.down()
    pull = emulator.add_pull(REPO, title="Sent while nobody listened")
    emulator.webhooks.wait_idle()
    receiver_server.up()

    result = webhook_deliveries_recover(now=emulator.now())

    wait_until(
        lambda: pull_titles(tracked) == {pull.number: "Sent while nobody listened"},
        timeout=DEADLINE,
        what="the redelivered row",
    )
    assert (result.redelivered, result.to_sync) == (1, [])
    emulator.webhooks.wait_idle()
    [failed, redelivered] = emulator.webhooks.deliveries(REPO)
    assert failed.status == "failed to connect to host" and redelivered.status == "OK"


@pytest.mark.django_db(transaction=True)
def test_a_hook_deleted_on_github_is_repaired_and_delivers_again(emulator, receiver_server):
    from tests.processes import DEADLINE, wait_until

    tracked = builders.tracked_repo(emulator, REPO)
    webhook_register(tracked_repo=tracked, url=receiver_server.url)
    emulator.webhooks.delete_hook(REPO, tracked.webhook_id)
    webhook_deliveries_recover(now=emulator.now())

    webhook_register(tracked_repo=fresh(tracked), url=receiver_server.url)
    pull = emulator.add_pull(REPO, title="After the repair")

    wait_until(
        lambda: pull_titles(tracked) == {pull.number: "After the repair"},
        timeout=DEADLINE,
        what="a delivery through the repaired hook",
    )
    assert fresh(tracked).webhook_id == emulator.webhooks.hooks(REPO)[0].id
