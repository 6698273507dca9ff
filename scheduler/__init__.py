"""The periodic-task scheduler: `python -m scheduler` enqueues `settings.SCHEDULED_TASKS`.

`jobs` reads and validates the settings and enqueues; `leader` is the Redis lock that lets only
one scheduler enqueue at a time; `runner` ties them to an APScheduler `BlockingScheduler`.
"""
