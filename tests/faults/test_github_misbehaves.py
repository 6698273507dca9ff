"""GitHub misbehaves: a 200 with truncated JSON or a proxy's HTML page, rate-limit headers
that are not numbers, a connection cut inside the headers or the body, an answer that stalls
past ``GITHUB_TIMEOUT``, a 5xx storm.

Each must reach the sync as ``GitHubTransientError`` with a clear message; the task layer
retries it a bounded number of times, shows it as one clean line, holds no worker thread past
the timeout, and a sync once GitHub recovers stores exactly what GitHub has. The CLI says it
in one line and exits 75. No log line of any of it shows the token.

Time is the emulator's: a storm ends when its clock passes a point, and each retry moves that
clock by the least backoff production would wait before it, while the test's backoffs are
milliseconds.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from dramatiq.middleware import Middleware

from apps.integrations.logs import KeyValueFormatter
from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_client import GitHubTransientError, client_for_token
from apps.integrations.tasks import QUEUE, sync_repository
from devtools.github_emulator import GitHubEmulator
from tests import builders
from tests.processes import manage

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]

REPO = "acme/widgets"
TIMEOUT = 2  # GITHUB_TIMEOUT, seconds
STALL = 60  # seconds; far past the timeout, and cut short when the emulator stops
JOIN_MS = 180_000  # a whole message chain, stalls included, on a loaded 2-core machine
# The test's backoffs (ms): the real ones (15 s doubling) only add waiting.
FAST_RETRIES = {"min_backoff": 10, "max_backoff": 100}
# The actor's backoff: min_backoff 15 s doubling; Dramatiq's jitter only ever lengthens it.
PRODUCTION_MIN_BACKOFF_S = 15
MAX_RETRIES = 5


@dataclass(frozen=True)
class Fault:
    name: str
    message: str  # the GitHubTransientError it must become

    def arm(self, emulator: GitHubEmulator, *, count: int = 1, path: str | None = None) -> None:
        if self.name == "outage":
            emulator.outage(requests=count, statuses=(502,), path_contains=path)
        else:
            emulator.misbehave_next(self.name, count=count, path_contains=path, seconds=STALL)


CUT = "GitHub closed the connection mid-response"
TIMED_OUT = f"GitHub request timed out after {TIMEOUT} s"
FAULTS = [
    Fault("truncated_json", "GitHub answered 200 with a body that is not JSON (application/json)"),
    Fault("html", "GitHub answered 200 with a body that is not JSON (text/html)"),
    Fault("garbled_headers", "GitHub answered with headers that are not readable"),
    Fault("cut_headers", CUT),
    Fault("cut_body", CUT),
    Fault("stall", TIMED_OUT),
    Fault("stall_body", TIMED_OUT),
    Fault("outage", "GitHub answered 502: Bad Gateway"),
]
BY_NAME = {fault.name: fault for fault in FAULTS}
STORM_MESSAGES = {
    502: "GitHub answered 502: Bad Gateway",
    503: "GitHub answered 503: Service Unavailable",
}


def each_fault(*names: str):
    chosen = [BY_NAME[name] for name in names] if names else FAULTS
    return pytest.mark.parametrize("fault", chosen, ids=[fault.name for fault in chosen])


# -- observing the system ----------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    message_id: str
    seconds: float  # how long the worker thread spent on it
    error: str | None


class AttemptLog(Middleware):
    """Each run of a message by the worker: how long it held the thread, how it ended.
    A retry is another run of the same message."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self._started = threading.local()

    def before_process_message(self, broker, message) -> None:
        self._started.at = time.monotonic()

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        error = None if exception is None else str(exception)
        seconds = time.monotonic() - self._started.at
        self.attempts.append(Attempt(message.message_id, seconds, error))


class ProductionRetryClock(Middleware):
    """Before each retry is enqueued, moves GitHub's (the emulator's) clock by the least
    backoff the actor waits in production before that retry: 15 s, 30 s, 60 s, ..."""

    def __init__(self, emulator: GitHubEmulator) -> None:
        self.emulator = emulator
        self.waited = timedelta(0)

    def before_enqueue(self, broker, message, delay) -> None:
        retry = message.options.get("retries", 0)
        # Retries enqueues with the delay; the broker enqueues again, without one, when it
        # is due.
        if retry and delay:
            step = timedelta(seconds=PRODUCTION_MIN_BACKOFF_S * 2 ** (retry - 1))
            self.waited += step
            self.emulator.advance(step)


@pytest.fixture(autouse=True)
def short_timeout(settings):
    settings.GITHUB_TIMEOUT = TIMEOUT


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog) -> Iterator[None]:
    """Every log line of every test here, the project's own and PyGithub's at DEBUG, must be
    free of the token. (Neither logger propagates to caplog's root handler, so it is added
    to them.)"""
    import github  # noqa: F401 - importing it sets its logger's level, undoing ours

    caplog.set_level(logging.DEBUG)
    own = [logging.getLogger(name) for name in ("apps", "github")]
    levels = [logger.level for logger in own]
    for logger in own:
        logger.addHandler(caplog.handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(own, levels, strict=True):
            logger.removeHandler(caplog.handler)
            logger.setLevel(level)
    formatter = KeyValueFormatter("%(levelname)s %(name)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call")
    lines = [formatter.format(record) for record in records]
    assert [line for line in lines if builders.TOKEN in line] == []


@pytest.fixture
def attempts(stub_broker) -> AttemptLog:
    log = AttemptLog()
    stub_broker.add_middleware(log)
    return log


@pytest.fixture
def repo(emulator, days_ago) -> TrackedRepository:
    emulator.generate_pulls(REPO, 250, start=days_ago(30), step=timedelta(hours=2))
    return builders.tracked_repo(emulator, REPO)


def status(repo: TrackedRepository) -> tuple[str, str]:
    return TrackedRepository.objects.values_list("sync_status", "last_sync_error").get(pk=repo.pk)


def on_listing(emulator: GitHubEmulator, nth: int, action: Callable[[], None]) -> None:
    """Run ``action`` when the ``nth`` listing request arrives (before it is answered)."""
    seen = {"n": 0}

    def hook(request) -> None:
        if request.path.endswith("/issues"):
            seen["n"] += 1
            if seen["n"] == nth:
                action()

    emulator.add_hook(hook)


def sync_and_wait(broker, repo: TrackedRepository) -> None:
    sync_repository.send_with_options(args=(repo.pk,), **FAST_RETRIES)
    broker.join(QUEUE, timeout=JOIN_MS, fail_fast=False)


def assert_one_clean_line(text: str) -> None:
    assert "\n" not in text and "Traceback" not in text and builders.TOKEN not in text


# -- the client ----------------------------------------------------------------------------------


@each_fault()
def test_client_turns_the_fault_into_a_transient_error_with_a_clear_message(emulator, fault):
    emulator.add_repo(REPO)
    client = client_for_token(builders.TOKEN)
    fault.arm(emulator)

    with pytest.raises(GitHubTransientError) as raised:
        client.get_repository(REPO)

    assert str(raised.value) == fault.message
    assert builders.TOKEN not in repr(raised.value)


@each_fault("cut_headers")
def test_listing_cut_inside_its_headers_is_not_an_empty_page(emulator, repo, fault):
    client = client_for_token(builders.TOKEN)
    fault.arm(emulator)

    with pytest.raises(GitHubTransientError):
        client.list_issues_page(REPO, since=None)


@each_fault("stall", "stall_body")
def test_stalled_answer_is_abandoned_after_the_timeout_not_after_the_stall(emulator, fault):
    emulator.add_repo(REPO)
    client = client_for_token(builders.TOKEN)
    fault.arm(emulator)

    started = time.monotonic()
    with pytest.raises(GitHubTransientError):
        client.get_repository(REPO)
    waited = time.monotonic() - started

    # The stall lasts a minute; waiting for it would take that long.
    assert TIMEOUT - 0.1 <= waited < TIMEOUT + 10


def test_refused_connection_says_github_could_not_be_reached(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.GITHUB_API_URL = f"http://127.0.0.1:{sock.getsockname()[1]}"

    with pytest.raises(GitHubTransientError) as raised:
        client_for_token(builders.TOKEN).get_repository(REPO)

    assert str(raised.value) == "could not reach GitHub: Connection refused"


# -- workers -------------------------------------------------------------------------------------


@each_fault()
def test_fault_mid_sync_costs_one_retry_and_the_retry_syncs_cleanly(
    stub_broker, stub_worker, attempts, emulator, repo, fault
):
    # The second listing page: the first page's rows and checkpoint are committed already.
    on_listing(emulator, 2, lambda: fault.arm(emulator, path="/issues"))

    sync_and_wait(stub_broker, repo)

    failed, retry = attempts.attempts
    assert (failed.error, retry.error) == (fault.message, None)
    assert failed.message_id == retry.message_id  # a retry, not a new request
    assert status(repo) == ("idle", "")
    builders.assert_matches_github(emulator, repo)


@each_fault()
def test_fault_that_persists_ends_in_error_after_five_retries(
    stub_broker, stub_worker, attempts, emulator, repo, fault
):
    fault.arm(emulator, count=1_000)

    sync_and_wait(stub_broker, repo)

    assert len(attempts.attempts) == 1 + MAX_RETRIES
    assert emulator.count_requests() == 1 + MAX_RETRIES  # each attempt fails on its first
    state, error = status(repo)
    assert state == "error" and error == fault.message
    assert_one_clean_line(error)


@each_fault("stall", "stall_body")
def test_stalled_github_holds_no_worker_thread_past_the_timeout(
    stub_broker, stub_worker, attempts, emulator, repo, fault
):
    fault.arm(emulator)

    sync_and_wait(stub_broker, repo)

    # The stall it gave up on lasts a minute.
    stalled, retry = attempts.attempts
    assert stalled.error == TIMED_OUT and TIMEOUT - 0.1 <= stalled.seconds < TIMEOUT + 10
    assert retry.error is None


# -- a 10-minute 5xx storm ---------------------------------------------------------------------


@pytest.fixture
def production_clock(stub_broker, emulator) -> ProductionRetryClock:
    clock = ProductionRetryClock(emulator)
    stub_broker.add_middleware(clock)
    return clock


def test_ten_minute_storm_outlasts_the_five_retries_and_ends_in_error(
    stub_broker, stub_worker, attempts, production_clock, emulator, repo
):
    emulator.outage(until=emulator.now() + timedelta(minutes=10))

    sync_and_wait(stub_broker, repo)

    # The retries come 15 + 30 + 60 + 120 + 240 s = 7.75 min after the first try at the
    # earliest: all inside the storm, one request each.
    assert production_clock.waited == timedelta(minutes=7, seconds=45)
    assert len(attempts.attempts) == 1 + MAX_RETRIES
    assert [request.fault for request in emulator.requests] == ["outage"] * (1 + MAX_RETRIES)
    assert status(repo) == ("error", STORM_MESSAGES[503])


def test_sync_after_the_storm_stores_everything(
    stub_broker, stub_worker, attempts, production_clock, emulator, repo
):
    storm_ends = emulator.now() + timedelta(minutes=10)
    emulator.outage(until=storm_ends)
    sync_and_wait(stub_broker, repo)
    assert status(repo)[0] == "error"
    emulator.advance(storm_ends - emulator.now())

    sync_and_wait(stub_broker, repo)

    assert attempts.attempts[-1].error is None
    assert status(repo) == ("idle", "")
    builders.assert_matches_github(emulator, repo)


def test_storm_shorter_than_the_retries_is_ridden_out_by_them(
    stub_broker, stub_worker, attempts, production_clock, emulator, repo
):
    # Over before the fourth retry, which comes 15 + 30 + 60 + 120 s = 3 min 45 s after the
    # first try at the earliest.
    emulator.outage(until=emulator.now() + timedelta(minutes=3))

    sync_and_wait(stub_broker, repo)

    errors = [attempt.error for attempt in attempts.attempts]
    assert errors == [STORM_MESSAGES[502], STORM_MESSAGES[503]] * 2 + [None]
    assert status(repo) == ("idle", "")
    builders.assert_matches_github(emulator, repo)


# -- the command line --------------------------------------------------------------------------


@each_fault()
def test_sync_repo_says_it_in_one_line_and_exits_75(emulator, repo, fault):
    fault.arm(emulator)

    result = manage(emulator, "sync_repo", REPO, GITHUB_TIMEOUT=str(TIMEOUT))

    assert result.returncode == 75
    assert result.stderr == f"error: {REPO}: {fault.message}; try again later\n"


@each_fault()
def test_sync_repo_logs_never_show_the_token(emulator, repo, fault):
    fault.arm(emulator)

    result = manage(
        emulator, "sync_repo", REPO, "-v", "2", GITHUB_TIMEOUT=str(TIMEOUT), LOG_LEVEL="DEBUG"
    )

    assert result.returncode == 75
    assert "Traceback" not in result.stderr
    assert builders.TOKEN not in result.stdout + result.stderr
