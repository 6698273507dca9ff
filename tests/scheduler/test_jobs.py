from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dramatiq
import fakeredis
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from scheduler.jobs import (
    INTERVAL_ANCHOR,
    ConfigError,
    ScheduledJob,
    build_trigger,
    catch_up,
    enqueue,
    last_run,
    load_jobs,
    record_run,
)

PING = "tests.scheduler.actors.ping"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def job(schedule: object, *, expire_seconds: int | None = None) -> ScheduledJob:
    entry: dict[str, object] = {"task": PING, "schedule": schedule}
    if expire_seconds is not None:
        entry["expire_seconds"] = expire_seconds
    [loaded] = load_jobs({"ping": entry})
    return loaded


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = dramatiq.get_broker()
    assert isinstance(stub, StubBroker)
    stub.flush_all()
    yield stub
    stub.flush_all()


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def enqueued(broker: StubBroker) -> list[Message]:
    queue = broker.queues["default"]
    return [Message.decode(data) for data in list(queue.queue)]


def test_crontab_schedule_fires_at_its_utc_time():
    trigger = build_trigger("0 3 * * *")

    fire = trigger.get_next_fire_time(None, at("2025-01-01T04:00:00"))

    assert fire == at("2025-01-02T03:00:00")
    assert fire.utcoffset() == timedelta(0)


def test_crontab_day_of_week_uses_cron_numbering_with_sunday_as_zero():
    wednesday = at("2025-01-01T12:00:00")

    assert build_trigger("0 9 * * 1").get_next_fire_time(None, wednesday) == at(
        "2025-01-06T09:00:00"
    )
    assert build_trigger("0 9 * * 0").get_next_fire_time(None, wednesday) == at(
        "2025-01-05T09:00:00"
    )
    assert build_trigger("0 9 * * 7").get_next_fire_time(None, wednesday) == at(
        "2025-01-05T09:00:00"
    )
    assert build_trigger("0 9 * * 4-5").get_next_fire_time(None, wednesday) == at(
        "2025-01-02T09:00:00"
    )


def test_timedelta_schedule_is_anchored_to_a_fixed_origin_not_to_start_up():
    trigger = build_trigger(timedelta(hours=6))

    assert trigger.start_date == INTERVAL_ANCHOR
    assert trigger.get_next_fire_time(None, at("2025-03-04T04:10:00")) == at("2025-03-04T06:00:00")
    assert trigger.get_next_fire_time(None, at("2025-03-04T06:00:01")) == at("2025-03-04T12:00:00")


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"task": "tests.scheduler.actors.missing", "schedule": "0 3 * * *"}, "cannot import"),
        ({"task": "tests.scheduler.actors.dramatiq", "schedule": "0 3 * * *"}, "not a Dramatiq"),
        ({"task": PING, "schedule": "0 3 * *"}, "5-field"),
        ({"task": PING, "schedule": "0 25 * * *"}, "not a valid crontab"),
        ({"task": PING, "schedule": "0 3 1 * 1"}, "both day-of-month and day-of-week"),
        ({"task": PING, "schedule": 3600}, "expected a timedelta or a crontab"),
        ({"task": PING, "schedule": timedelta(0)}, "must be positive"),
        ({"task": PING, "schedule": "0 3 * * *", "expire_seconds": "60"}, "positive int"),
        ({"task": PING, "schedule": "0 3 * * *", "expires": 60}, "unknown key"),
        ({"schedule": "0 3 * * *"}, "dotted path"),
    ],
)
def test_bad_entry_is_a_one_line_error_naming_the_entry(entry, error):
    with pytest.raises(ConfigError) as raised:
        load_jobs({"nightly": entry})

    message = str(raised.value)
    assert message.startswith("SCHEDULED_TASKS['nightly']")
    assert error in message
    assert "\n" not in message


def test_enqueue_sends_the_actor_with_max_age_from_expire_seconds(broker):
    nightly = job("0 3 * * *", expire_seconds=600)

    sent = enqueue(nightly)

    [message] = enqueued(broker)
    assert message.actor_name == "ping"
    assert message.message_id == sent.message_id
    assert message.options["max_age"] == 600_000


def test_enqueue_without_expire_seconds_sets_no_max_age(broker):
    enqueue(job("0 3 * * *"))

    [message] = enqueued(broker)
    assert "max_age" not in message.options


def test_first_start_records_a_baseline_and_enqueues_nothing(broker, client):
    nightly = job("0 3 * * *")
    start = at("2025-01-02T04:00:00")

    caught_up = catch_up([nightly], client=client, now=start)

    assert caught_up == []
    assert enqueued(broker) == []
    assert last_run(client, "ping") == start


def test_run_missed_while_down_is_caught_up_once_at_start(broker, client):
    nightly = job("0 3 * * *")
    record_run(client, "ping", at("2025-01-01T03:00:00.010"))

    first = catch_up([nightly], client=client, now=at("2025-01-02T04:00:00"))
    again = catch_up([nightly], client=client, now=at("2025-01-02T04:05:00"))

    assert first == ["ping"]
    assert again == []
    assert len(enqueued(broker)) == 1
    assert last_run(client, "ping") == at("2025-01-02T04:00:00")


def test_restart_before_the_next_run_catches_nothing_up(broker, client):
    every_six_hours = job(timedelta(hours=6))
    record_run(client, "ping", at("2025-01-02T06:00:00"))

    caught_up = catch_up([every_six_hours], client=client, now=at("2025-01-02T11:59:59"))

    assert caught_up == []
    assert enqueued(broker) == []
