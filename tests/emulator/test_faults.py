"""The emulator's injected faults, as they arrive on the wire (raw sockets where a client
library would hide what was sent)."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
import requests

from devtools.github_emulator import GitHubEmulator
from tests.processes import wait_until

from .conftest import TOKEN

REPO = "acme/widgets"


def raw_get(emu: GitHubEmulator, path: str, *, timeout: float = 30) -> bytes:
    """Everything the emulator sends for one GET, up to the moment it closes the connection."""
    request = (
        f"GET {emu.prefix}{path} HTTP/1.1\r\nHost: {emu.host}:{emu.port}\r\n"
        f"Authorization: token {TOKEN}\r\nConnection: close\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection((emu.host, emu.port), timeout=timeout) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def get(emu: GitHubEmulator, path: str) -> requests.Response:
    return requests.get(emu.api_url + path, headers={"Authorization": f"token {TOKEN}"}, timeout=30)


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length in {head!r}")


@pytest.fixture
def emu_with_pulls(emu: GitHubEmulator) -> GitHubEmulator:
    for number in range(5):
        emu.add_pull(REPO, title=f"Change {number}")
    return emu


def test_truncated_json_sends_half_the_body_with_a_content_length_that_agrees(emu_with_pulls):
    whole = get(emu_with_pulls, f"/repos/{REPO}/issues").content
    emu_with_pulls.misbehave_next("truncated_json")

    answer = get(emu_with_pulls, f"/repos/{REPO}/issues")

    assert answer.status_code == 200
    assert answer.content == whole[: len(whole) // 2]
    assert emu_with_pulls.requests[-1].fault == "truncated_json"


def test_html_answers_200_with_a_proxy_page_without_reaching_github(emu: GitHubEmulator):
    emu.misbehave_next("html")

    answer = get(emu, f"/repos/{REPO}")

    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.text.startswith("<!DOCTYPE html>")
    assert "X-RateLimit-Remaining" not in answer.headers  # a proxy answered, not GitHub
    assert get(emu, "/user").headers["X-RateLimit-Remaining"] == "4999"


def test_garbled_headers_sends_rate_limit_headers_that_are_not_numbers(emu: GitHubEmulator):
    emu.misbehave_next("garbled_headers")

    answer = get(emu, f"/repos/{REPO}")

    assert answer.status_code == 200 and answer.json()["full_name"] == REPO
    assert answer.headers["X-RateLimit-Remaining"] == "plenty"
    assert answer.headers["X-RateLimit-Reset"] == "soon"


def test_cut_headers_closes_the_connection_inside_the_header_block(emu: GitHubEmulator):
    emu.misbehave_next("cut_headers")

    received = raw_get(emu, f"/repos/{REPO}")

    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\n" not in received
    assert b"content-length" not in received.lower()


def test_cut_body_closes_the_connection_halfway_through_the_body(emu: GitHubEmulator):
    emu.misbehave_next("cut_body")

    head, _, body = raw_get(emu, f"/repos/{REPO}").partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 200 OK")
    assert 0 < len(body) < content_length(head)


@pytest.mark.parametrize("fault", ["stall", "stall_body"])
def test_stall_sends_nothing_more_for_its_seconds(emu: GitHubEmulator, fault):
    emu.misbehave_next(fault, seconds=60)
    received = b""

    with socket.create_connection((emu.host, emu.port), timeout=1) as sock:
        sock.sendall(f"GET /repos/{REPO} HTTP/1.1\r\nAuthorization: token {TOKEN}\r\n\r\n".encode())
        with pytest.raises(TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk

    if fault == "stall":
        assert received == b""
    else:
        head, _, body = received.partition(b"\r\n\r\n")
        assert 0 < len(body) < content_length(head)


def test_stall_ends_when_the_emulator_stops():
    emu = GitHubEmulator().start()
    emu.add_token(TOKEN)
    emu.add_repo(REPO)
    emu.misbehave_next("stall", seconds=600)
    answers: list[bytes] = []
    reader = threading.Thread(target=lambda: answers.append(raw_get(emu, f"/repos/{REPO}")))
    reader.start()
    wait_until(lambda: emu.requests, timeout=30, what="the stalled request to arrive")

    emu.stop()
    reader.join(timeout=30)

    assert not reader.is_alive()


def test_misbehave_next_applies_only_to_matching_paths_and_count(emu: GitHubEmulator):
    emu.misbehave_next("html", count=2, path_contains="/issues")

    assert get(emu, "/user").headers["Content-Type"].startswith("application/json")
    kinds = [get(emu, f"/repos/{REPO}/issues").headers["Content-Type"] for _ in range(3)]

    assert [kind.split(";")[0] for kind in kinds] == ["text/html", "text/html", "application/json"]


def test_misbehave_next_refuses_an_unknown_fault_or_a_stall_without_seconds(emu: GitHubEmulator):
    with pytest.raises(ValueError):
        emu.misbehave_next("gremlins")
    with pytest.raises(ValueError):
        emu.misbehave_next("stall")


def test_outage_answers_its_statuses_in_turn_until_the_emulator_clock_passes_its_end(
    emu: GitHubEmulator,
):
    emu.outage(until=emu.now() + timedelta(minutes=10))

    during = [get(emu, "/user").status_code for _ in range(3)]
    emu.advance(timedelta(minutes=9, seconds=30))
    still = get(emu, "/user").status_code
    emu.advance(timedelta(seconds=30))
    after = get(emu, "/user").status_code

    assert during == [502, 503, 502] and still == 503 and after == 200
    assert [r.fault for r in emu.requests] == ["outage"] * 4 + [""]


def test_outage_with_a_request_count_ends_after_that_many_answers(emu: GitHubEmulator):
    emu.outage(requests=2, statuses=(503,))

    statuses = [get(emu, "/user").status_code for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_outage_needs_an_end(emu: GitHubEmulator):
    with pytest.raises(ValueError):
        emu.outage()
