"""Log formatting for the project's event-style log lines, and the one ``LOG_FORMAT`` switch.

Log lines are events with context: ``logger.info("repo_sync.fanout", extra={"count": 3})``.
``text`` (the default) prints them for people, with the fields appended as key=value;
``json`` prints one JSON object per line for a log pipeline:
``{"time": "...", "level": "INFO", "logger": "apps.integrations.tasks",
"event": "repo_sync.fanout", "count": 3}``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """Plain text with the ``extra=`` fields appended as key=value, so event-style log lines
    (``repo_sync.rate_limited``) carry their context."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            text += " " + " ".join(f"{key}={value!r}" for key, value in sorted(extras.items()))
        return text


class EventJsonFormatter(JsonFormatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, event (the message),
    then the ``extra=`` fields; a traceback, if any, as ``exc_info``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "message": "event",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's ``LOGGING`` for ``log_format`` (one of ``LOG_FORMATS``).

    In ``json`` mode the root logger gets the same handler, so that third-party lines
    (Dramatiq's workers, APScheduler, Django) are JSON too: dictConfig replaces the plain
    handler Dramatiq's CLI put on the root logger in each worker process, and the scheduler's
    ``basicConfig`` finds a handler already there and adds none. In ``text`` mode the root
    logger is left to whoever runs the process (Dramatiq's CLI, the scheduler), as before.
    """
    formatter = (
        {"()": f"{__name__}.EventJsonFormatter"}
        if log_format == "json"
        else {
            "()": f"{__name__}.KeyValueFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "default"},
        },
        "loggers": {
            # PyGithub attaches its own INFO handler on import; route it through ours instead.
            "github": {"handlers": ["console"], "level": "WARNING", "propagate": False},
            # No propagation: dramatiq's CLI puts its own handler on the root logger, and
            # every line would be printed twice.
            "apps": {"handlers": ["console"], "level": level, "propagate": False},
        },
    }
    if log_format == "json":
        config["root"] = {"handlers": ["console"], "level": "INFO"}
    return config
