"""Log formatting for the project's event-style log lines."""

import logging

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
