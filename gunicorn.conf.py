"""gunicorn settings for `make serve`: the admin and the webhook receiver (README, "Serving the
web app"). Read from the environment:

- ``PORT`` (8000): gunicorn binds 127.0.0.1 only; a proxy on the same host terminates TLS and
  forwards to it.
- ``WEB_CONCURRENCY`` (2 × CPUs + 1) worker processes, each with ``GUNICORN_THREADS`` (4)
  threads. A webhook answer is a few short queries, so throughput is bound by CPU and by
  the database's write lock, not by waiting; threads cover the requests that wait on a
  lock. With PostgreSQL each thread keeps a connection: budget workers × threads of them.

Any other gunicorn setting can be added with ``GUNICORN_CMD_ARGS``.
"""

import os
import sys


def _int_env(name: str, default: int, *, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        sys.exit(f"error: {name} must be a whole number from {low} to {high}, got {raw!r}")
    return value


# Each worker thread keeps its database connection between requests (the settings' default
# for SQLite is to close it: a new one per request cost as much as the request's own work).
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "60")

wsgi_app = "tformance.wsgi:application"
bind = [f"127.0.0.1:{_int_env('PORT', 8000, low=1, high=65535)}"]
workers = _int_env("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1, low=1, high=256)
worker_class = "gthread"
threads = _int_env("GUNICORN_THREADS", 4, low=1, high=256)

# Settings are read once in the master: a missing SECRET_KEY stops start-up with its one
# line instead of every worker failing to boot with a traceback; workers fork ready to serve.
preload_app = True

# GitHub counts a delivery as failed after 10 s. A worker silent for 30 s is stuck (a lock
# held elsewhere) and is replaced; its delivery is redelivered by the recovery job.
timeout = 30
graceful_timeout = 10
keepalive = 5

# The path, never the query string (it could carry a token) or headers (the signature).
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
errorlog = "-"

# gunicorn's runtime control socket is one path per user ($HOME/.gunicorn/gunicorn.ctl): a
# second instance on the host (tests, the benchmark, another checkout) would take it over.
control_socket_disable = True
