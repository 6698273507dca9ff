"""``make serve``'s gunicorn, over real HTTP: deliveries, the size cap, a database outage."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from apps.integrations.models import PullRequest
from devtools.processes import free_port, stop_process
from devtools.webhook_payloads import SignedDelivery, pull_request_payload, signed
from tests import builders, processes
from tests.webhooks.conftest import SECRET, URL

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = "acme/widgets"
# `make serve` runs exactly this (through uv, in .venv).
SERVE = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py"]


@dataclass
class Served:
    port: int
    log: Path

    def post(self, delivery: SignedDelivery, *, path: str = URL) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=delivery.body, headers=delivery.headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()


def serve(emulator, log: Path, **env: str) -> Iterator[Served]:
    port = free_port()
    process = processes.start(
        SERVE,
        processes.process_env(
            emulator, PORT=str(port), GITHUB_WEBHOOK_SECRET=f"{SECRET},old-secret",
            ALLOWED_HOSTS="127.0.0.1", **env,
        ),
        log,
    )  # fmt: skip
    served = Served(port=port, log=log)
    ping = signed({"zen": "Design for failure."}, event="ping", secret=SECRET)

    def answers_ping() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return served.post(ping)[0] == 200
        except OSError:
            return False

    try:
        processes.wait_until(
            answers_ping, timeout=processes.DEADLINE, what="gunicorn to answer a ping", log=log
        )
        yield served
    finally:
        stop_process(process)


@pytest.fixture
def served(emulator, process_logs) -> Iterator[Served]:
    yield from serve(emulator, process_logs / "gunicorn.log")


def test_served_receiver_stores_a_signed_pull_request(served, emulator):
    emulator.add_pull(REPO, title="Served for real")
    repo = builders.tracked_repo(emulator, REPO)

    status, body = served.post(
        signed(pull_request_payload(emulator, REPO, 1), event="pull_request", secret=SECRET)
    )

    assert (status, body) == (200, b'{"outcome": "applied"}')
    assert PullRequest.objects.get(tracked_repo=repo, number=1).title == "Served for real"


def test_served_receiver_refuses_a_body_over_the_cap_before_it_arrives(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.putrequest("POST", URL)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(30 * 1024 * 1024))
    conn.endheaders(b"{" + b" " * 1024)

    answer = conn.getresponse()

    assert answer.status == 413
    conn.close()


def test_served_access_log_has_neither_query_string_nor_signature(served, emulator):
    delivery = signed(b"{}", event="pull_request", secret="wrong secret")

    status, _ = served.post(delivery, path=f"{URL}?access_token={builders.new_token()}")

    assert status == 401
    processes.wait_until(
        lambda: "POST /webhooks/github/ HTTP/1.1" in served.log.read_text(),
        timeout=processes.DEADLINE,
        what="the access log line",
    )
    log = served.log.read_text()
    assert "access_token" not in log
    assert SECRET not in log
    assert delivery.headers["X-Hub-Signature-256"].removeprefix("sha256=") not in log


def test_receiver_answers_503_while_the_database_is_unreachable(emulator, process_logs):
    emulator.add_pull(REPO, title="Waits for the database")
    builders.tracked_repo(emulator, REPO)
    delivery = signed(pull_request_payload(emulator, REPO, 1), event="pull_request", secret=SECRET)
    nothing_listens = f"postgres://tformance@127.0.0.1:{free_port()}/tformance"

    for served in serve(emulator, process_logs / "gunicorn.log", DATABASE_URL=nothing_listens):
        status, body = served.post(delivery)

    assert status == 503, body


@pytest.mark.parametrize(
    ("env", "names"),
    [({"PORT": "eighty"}, "PORT"), ({"SECRET_KEY": ""}, "SECRET_KEY")],
    ids=["bad port", "no secret key"],
)
def test_serve_with_a_bad_setting_stops_with_one_line(emulator, env, names):
    result = subprocess.run(
        SERVE,
        cwd=processes.ROOT,
        env=processes.process_env(emulator, **env),
        capture_output=True,
        text=True,
        timeout=processes.DEADLINE,
    )

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and names in line
