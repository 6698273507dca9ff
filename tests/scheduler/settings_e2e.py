"""Production settings with SCHEDULED_TASKS pointed at the test actors, for subprocess tests.

E2E_SCHEDULED_TASK (read here only, never by the scheduler) swaps the daily job's dotted path so
a test can feed the scheduler a bad entry.
"""

import os
from datetime import timedelta

from tformance.settings import *  # noqa: F403

SCHEDULED_TASKS = {
    "ping-daily": {
        "task": os.environ.get("E2E_SCHEDULED_TASK", "tests.scheduler.actors.ping"),
        "schedule": "0 3 * * *",
        "expire_seconds": 600,
    },
    "pong-every-6-hours": {
        "task": "tests.scheduler.actors.pong",
        "schedule": timedelta(hours=6),
    },
}
