import logging


class SyncOutcomeResultFilter(logging.Filter):
    """Drops Dramatiq's "returned a value ... no Results middleware" warning for actors whose
    return value is read by SyncOutcomeMiddleware (it is not discarded, just not stored)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Actor 'sync_repository' returned a value")
            and "Results middleware" in message
        )
