"""Production settings with the daily sync job on an interval of SYNC_INTERVAL_SECONDS, for the
scheduler's fault tests: run times then pass within seconds, not once a day or a minute.

Only the schedule differs: the job id (its last run in Redis), the actor and the message's
max age are production's. Read by `python -m scheduler` subprocesses only.
"""

import os
from datetime import timedelta

from tformance.settings import *  # noqa: F403
from tformance.settings import SCHEDULED_TASKS as _PRODUCTION_TASKS

SCHEDULED_TASKS = {
    job_id: {**entry, "schedule": timedelta(seconds=float(os.environ["SYNC_INTERVAL_SECONDS"]))}
    for job_id, entry in _PRODUCTION_TASKS.items()
}
