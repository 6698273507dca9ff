import logging

# Actors whose return value SyncOutcomeMiddleware reads, or that return a count for callers.
_RESULT_ACTORS = ("sync_repository", "sync_all_repositories")


class SyncOutcomeResultFilter(logging.Filter):
    """Drops Dramatiq's "returned a value ... no Results middleware" warning for our actors:
    their return value is read (by SyncOutcomeMiddleware, or by tests and the CLI calling the
    actor function), just not stored in a result backend."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "Results middleware" in message
            and any(message.startswith(f"Actor '{name}' returned") for name in _RESULT_ACTORS)
        )


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """Plain text with the ``extra=`` fields appended as key=value, so event-style log lines
    (``repo_sync.deferred``) carry their context."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            text += " " + " ".join(f"{key}={value!r}" for key, value in sorted(extras.items()))
        return text
