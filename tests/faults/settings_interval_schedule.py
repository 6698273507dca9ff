"""Production settings with the daily sync job on an interval of SYNC_INTERVAL_SECONDS, for the
scheduler's fault tests: run times then pass within seconds, not once a day or a minute.

Only the daily job is scheduled, and only its schedule differs: the job id (its last run in
Redis), the actor and the message's max age are production's. Read by `python -m scheduler`
subprocesses only.
"""

import os
from datetime import timedelta

from tformance.settings import *  # noqa: F403
from tformance.settings import SCHEDULED_TASKS as _PRODUCTION_TASKS

# The daily job alone: the other jobs (the stuck-row sweep) would interleave their own
# enqueues and last runs with the ones these tests count.
DAILY_JOB = "sync-github-repositories-every-day"
SCHEDULED_TASKS = {
    DAILY_JOB: {
        **_PRODUCTION_TASKS[DAILY_JOB],
        "schedule": timedelta(seconds=float(os.environ["SYNC_INTERVAL_SECONDS"])),
    }
}
