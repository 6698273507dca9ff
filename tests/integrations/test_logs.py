"""LOG_FORMAT: one JSON object per line for workers, the scheduler and commands; text stays
the default; anything else stops start-up with one line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import timedelta

import pytest

from apps.integrations.logs import EventJsonFormatter
from apps.integrations.models import TrackedRepository
from devtools.processes import stop_process as stop
from tests import builders
from tests.processes import DEADLINE, ROOT, manage, process_env, start, wait_until


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (fails on the first that is not one)."""
    objects = []
    for line in text.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(parsed, dict), line
        objects.append(parsed)
    return objects


def test_json_line_has_time_level_logger_event_and_the_fields():
    record = logging.LogRecord(
        "apps.integrations.tasks", logging.INFO, __file__, 1, "repo_sync.fanout", None, None
    )
    record.count = 3

    line = json.loads(EventJsonFormatter().format(record))

    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "apps.integrations.tasks",
        "event": "repo_sync.fanout",
        "count": 3,
    }
    assert line["time"].endswith("+00:00")


@pytest.mark.slow
def test_unknown_log_format_stops_start_up_with_one_line(emulator):
    result = manage(emulator, "check", LOG_FORMAT="xml")

    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: LOG_FORMAT must be 'text' or 'json'"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.usefixtures("process_logs")
def test_worker_with_log_format_json_writes_only_json_lines(
    emulator, redis_url, days_ago, tmp_path
):
    emulator.generate_pulls("acme/api", 5, start=days_ago(3), step=timedelta(hours=3))
    repo = builders.tracked_repo(emulator, "acme/api")
    env = process_env(emulator, REDIS_URL=redis_url, LOG_FORMAT="json")
    stderr = tmp_path / "worker.log"
    with stderr.open("ab") as err, (tmp_path / "worker-stdout.txt").open("ab") as out:
        # --skip-logging: Dramatiq's supervisor process would print its start-up line in its
        # own format (it never loads the project's settings).
        process = subprocess.Popen(
            [sys.executable, "manage.py", "rundramatiq", "--skip-logging", "-p", "1", "-t", "2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        assert manage(emulator, "sync_all", REDIS_URL=redis_url).returncode == 0
        wait_until(
            lambda: TrackedRepository.objects.get(pk=repo.pk).last_sync_at is not None,
            timeout=DEADLINE,
            what="the sync",
            log=stderr,
        )
    finally:
        stop(process)

    lines = json_lines(stderr.read_text())
    fanout = [line for line in lines if line["event"] == "repo_sync.fanout"]
    assert fanout and fanout[0]["count"] == 1 and fanout[0]["level"] == "INFO"
    assert any(line["event"] == "repo_sync.finished" for line in lines)
    # Dramatiq's own lines, through the handler its CLI put on the root logger before.
    assert any(line["logger"].startswith("dramatiq.") for line in lines)


@pytest.mark.slow
@pytest.mark.usefixtures("process_logs")
def test_scheduler_with_log_format_json_writes_only_json_lines(emulator, redis_url, tmp_path):
    env = process_env(emulator, REDIS_URL=redis_url, LOG_FORMAT="json")
    log = tmp_path / "scheduler.log"
    process = start([sys.executable, "-m", "scheduler"], env, log)
    try:
        wait_until(
            lambda: "scheduler.leading" in log.read_text(),
            timeout=DEADLINE,
            what="the scheduler to lead",
            log=log,
        )
    finally:
        stop(process)

    lines = json_lines(log.read_text())
    assert any(line["event"].startswith("scheduler.leading") for line in lines)
    assert lines[-1]["event"] == "scheduler.stopped"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_command_log_lines_are_json_beside_its_progress_lines(emulator, days_ago):
    emulator.generate_pulls("acme/api", 5, start=days_ago(3), step=timedelta(hours=3))
    builders.tracked_repo(emulator, "acme/api")

    result = manage(emulator, "sync_repo", "acme/api", "-v", "2", LOG_FORMAT="json")

    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("acme/api: ")]
    logged = json_lines(
        "\n".join(line for line in result.stderr.splitlines() if line not in progress)
    )
    assert progress
    started = next(line for line in logged if line["event"] == "repo_sync.started")
    assert (
        started["kind"] == "full" and started["logger"] == "apps.integrations.services.github_sync"
    )
