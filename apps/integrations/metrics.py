"""Prometheus metrics: what the task layer did, what GitHub answered, how the fleet stands.

Three sources, two places to scrape (README "Metrics and logs"):

- **Per process, counted where it happens**: syncs by outcome (``tformance_syncs_total``),
  GitHub requests by kind and status (``tformance_github_requests_total``) and each token's
  remaining rate limit as of its last answer (``tformance_github_rate_limit_remaining``,
  labelled with a SHA-256 prefix of the token, never the token). Workers record them; with
  ``WORKER_METRICS`` on, ``WorkerMetrics`` (Dramatiq's own Prometheus middleware) writes
  them, with Dramatiq's message counters and durations, to files that its exporter (one per
  worker group, ``dramatiq_prom_port``) sums over the group's processes.
- **Fleet state, read from the database at scrape time** (``FleetCollector``): repositories
  by status and a histogram of the time since each one's last successful sync. It is the
  same whoever asks, so the web process serves it (``GET /metrics``, ``metrics_view``), with
  that process's own counters.

``prometheus_client`` is imported inside functions only, never with this module: it picks
single- or multi-process storage at import, from ``PROMETHEUS_MULTIPROC_DIR``, which
Dramatiq's middleware sets only once a worker process has booted (after Django set up and
imported this module). Imported earlier, every worker process would count on its own and
the exporter would see nothing of it.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from apps.integrations.services.pacing import token_digest

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

    from apps.integrations.services.github_client import GitHubClient, Response
    from apps.integrations.services.sync_jobs import SyncJobOutcome

P = ParamSpec("P")
T = TypeVar("T")

# What ``repository_sync_job`` returned, or ``rate_limited`` / ``error`` when it raised.
SYNC_OUTCOMES = (
    "synced",
    "continue",
    "wait",
    "dropped",
    "lease_lost",
    "skipped",
    "rate_limited",
    "error",
)
# Upper bounds (seconds) of the sync-age histogram; 26 h is sync_status's default --stale.
SYNC_AGE_BUCKETS = (3600, 6 * 3600, 12 * 3600, 24 * 3600, 26 * 3600, 2 * 86400, 7 * 86400)


# --------------------------------------------------------------------------------------------
# Counted in the process where it happens
# --------------------------------------------------------------------------------------------


class _Instruments(NamedTuple):
    syncs: Any
    github_requests: Any
    rate_limit_remaining: Any


_instruments_lock = threading.Lock()
_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    """The process's metric objects, made on first use (see the module docstring for why
    not at import). Registered in prometheus_client's default registry."""
    global _instruments
    if _instruments is None:
        with _instruments_lock:
            if _instruments is None:
                from prometheus_client import Counter, Gauge, disable_created_metrics

                # A "<name>_created" gauge per counter series doubles the output for a
                # start time Prometheus does not use.
                disable_created_metrics()
                _instruments = _Instruments(
                    syncs=Counter(
                        "tformance_syncs",
                        "Sync jobs run, by outcome: what the job returned, or rate_limited / "
                        "error when it raised (an error may still be retried).",
                        ["outcome"],
                    ),
                    github_requests=Counter(
                        "tformance_github_requests",
                        "Requests sent to GitHub, by kind and HTTP status ('error': no answer "
                        "or an unreadable one).",
                        ["kind", "status"],
                    ),
                    rate_limit_remaining=Gauge(
                        "tformance_github_rate_limit_remaining",
                        "X-RateLimit-Remaining of the token's last successful answer, per "
                        "resource; token is a SHA-256 prefix of the token.",
                        ["token", "resource"],
                        # Across a worker group's processes, the latest answer wins.
                        multiprocess_mode="mostrecent",
                    ),
                )
    return _instruments


_KINDS = (
    ("graphql", re.compile(r"/graphql$")),
    ("user", re.compile(r"^/user$")),
    ("get_repository", re.compile(r"^/repos/[^/]+/[^/]+$")),
    ("list_issues", re.compile(r"^/repos/[^/]+/[^/]+/issues$")),
    ("get_pull", re.compile(r"^/repos/[^/]+/[^/]+/pulls/\d+$")),
    ("hooks", re.compile(r"^/repos/[^/]+/[^/]+/hooks(/.*)?$")),
    ("rate_limit", re.compile(r"^/rate_limit$")),
)


def request_kind(path: str) -> str:
    """A bounded label for a request path (relative, or an absolute URL as for GraphQL)."""
    path = re.sub(r"^[a-z]+://[^/]+", "", path).split("?", 1)[0].rstrip("/")
    # A GitHub Enterprise Server API lives under /api/v3.
    path = re.sub(r"^/api/v3(?=/)", "", path)
    return next((kind for kind, pattern in _KINDS if pattern.search(path)), "other")


def observes_github_requests(
    request: Callable[..., Response],
) -> Callable[..., Response]:
    """Wraps ``GitHubClient.request``: counts each request by kind and status, and notes
    the token's remaining rate limit from a successful answer's headers."""

    @functools.wraps(request)
    def observed(
        client: GitHubClient, method: str, path: str, *args: Any, **kwargs: Any
    ) -> Response:
        from apps.integrations.services.github_client import GitHubError

        kind = request_kind(path)
        try:
            response = request(client, method, path, *args, **kwargs)
        except GitHubError as error:
            # Typed errors built from an answer carry its status; those without one had no
            # answer (a transport failure) or one that could not be read.
            status = str(error.status) if error.status else "error"
            instruments().github_requests.labels(kind=kind, status=status).inc()
            raise
        metrics = instruments()
        metrics.github_requests.labels(kind=kind, status=str(response.status)).inc()
        remaining = response.headers.get("x-ratelimit-remaining")
        token = getattr(getattr(client.github.requester, "auth", None), "token", None)
        if remaining is not None and token:
            try:
                value = float(remaining)
            except ValueError:
                return response
            metrics.rate_limit_remaining.labels(
                token=token_digest(token),
                resource=response.headers.get("x-ratelimit-resource", "core"),
            ).set(value)
        return response

    return observed


def counts_sync_outcomes(job: Callable[P, SyncJobOutcome]) -> Callable[P, SyncJobOutcome]:
    """Wraps ``repository_sync_job``, the one place every outcome of a sync is decided
    (for workers and ``sync_repo`` alike), to count them. Interruptions (Ctrl-C, Dramatiq's
    time limit and shutdown) are not outcomes and are not counted."""

    @functools.wraps(job)
    def counted(*args: P.args, **kwargs: P.kwargs) -> SyncJobOutcome:
        from apps.integrations.services.github_client import GitHubRateLimited

        try:
            outcome = job(*args, **kwargs)
        except GitHubRateLimited:
            instruments().syncs.labels(outcome="rate_limited").inc()
            raise
        except Exception:
            instruments().syncs.labels(outcome="error").inc()
            raise
        instruments().syncs.labels(outcome=outcome.action).inc()
        return outcome

    return counted


# --------------------------------------------------------------------------------------------
# Fleet state, from the database at scrape time
# --------------------------------------------------------------------------------------------


class FleetCollector:
    """Repositories by status and how long ago each last synced successfully, read from
    the database on every scrape (two queries, whatever the number of repositories).

    Only active repositories count: an inactive one is not meant to sync. The age is a gauge
    histogram (a snapshot of the fleet, which goes down as well as up), never a label per
    repository; never-synced repositories are counted apart.
    """

    def describe(self) -> list[Any]:
        # Nothing to check at registration: collecting would query the database then.
        return []

    def collect(self) -> Iterator[Any]:
        from django.db.models import Count, DateTimeField, DurationField, F, Q, Sum, Value
        from django.utils import timezone
        from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

        from apps.integrations.models import TrackedRepository

        repos = TrackedRepository.objects.all()
        by_status = GaugeMetricFamily(
            "tformance_repositories",
            "Active tracked repositories by sync status.",
            labels=["status"],
        )
        counts = dict(
            repos.filter(is_active=True)
            .order_by()
            .values_list("sync_status")
            .annotate(n=Count("pk"))
        )
        for status in TrackedRepository.SyncStatus.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status

        now = timezone.now()
        within = {
            f"le_{bound}": Count(
                "pk", filter=Q(is_active=True, last_sync_at__gte=now - timedelta(seconds=bound))
            )
            for bound in SYNC_AGE_BUCKETS
        }
        totals = repos.aggregate(
            **within,
            synced=Count("pk", filter=Q(is_active=True, last_sync_at__isnull=False)),
            age=Sum(
                Value(now, output_field=DateTimeField()) - F("last_sync_at"),
                output_field=DurationField(),
                filter=Q(is_active=True, last_sync_at__isnull=False),
            ),
            never=Count("pk", filter=Q(is_active=True, last_sync_at__isnull=True)),
            inactive=Count("pk", filter=Q(is_active=False)),
        )
        yield GaugeHistogramMetricFamily(
            "tformance_repository_sync_age_seconds",
            "Seconds since each active repository's last successful sync (those synced "
            "at least once).",
            buckets=[(str(float(b)), totals[f"le_{b}"]) for b in SYNC_AGE_BUCKETS]
            + [("+Inf", totals["synced"])],
            gsum_value=totals["age"].total_seconds() if totals["age"] else 0.0,
        )
        yield GaugeMetricFamily(
            "tformance_repositories_never_synced",
            "Active tracked repositories without a successful sync yet.",
            value=totals["never"],
        )
        yield GaugeMetricFamily(
            "tformance_repositories_inactive",
            "Tracked repositories that no longer sync (deleted, archived, turned off).",
            value=totals["inactive"],
        )


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: this process's own metrics and the fleet's, in Prometheus' text
    format. With ``METRICS_TOKEN`` set, only for ``Authorization: Bearer <METRICS_TOKEN>``."""
    from django.conf import settings
    from django.http import HttpResponse, HttpResponseNotAllowed
    from django.utils.crypto import constant_time_compare
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    if settings.METRICS_TOKEN and not constant_time_compare(
        request.headers.get("Authorization", ""), f"Bearer {settings.METRICS_TOKEN}"
    ):
        response = HttpResponse("metrics need a bearer token\n", status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(FleetCollector())
    instruments()  # the process's counters show (at 0) before their first event
    return HttpResponse(
        generate_latest(REGISTRY) + generate_latest(fleet), content_type=CONTENT_TYPE_LATEST
    )


# --------------------------------------------------------------------------------------------
# Worker processes: Dramatiq's Prometheus middleware and exporter
# --------------------------------------------------------------------------------------------


class WorkerMetrics(Middleware):
    """Dramatiq's Prometheus middleware (message counts, errors, retries, durations, and an
    exporter per worker group), switched on by ``settings.WORKER_METRICS`` and only in
    worker processes.

    Dramatiq's own class assumes its ``after_process_boot`` ran, which only the worker CLI
    emits: listed as it is, every process that sends a message (the scheduler, the admin,
    the stub broker in tests) would fail in its hooks, and every worker started would fork
    an exporter onto the same port. This one does nothing until a worker process boots with
    ``WORKER_METRICS`` on; then it builds Dramatiq's middleware and hands it every hook.

    Dramatiq's environment variables place the exporter: ``dramatiq_prom_host`` (0.0.0.0),
    ``dramatiq_prom_port`` (9191) and ``dramatiq_prom_db`` (the directory the group's
    processes write to; the exporter sums it). Two worker groups on one machine need two
    ports and two directories. At boot, each process deletes the files of processes that
    are gone (a previous run's), so the group's counters start from zero with each run.
    """

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))
        self.prometheus: Middleware | None = None

    @property
    def forks(self) -> list[Callable[[], int]]:
        # Read by the worker CLI after process boot: the exporter exists only when on.
        return self.prometheus.forks if self.prometheus is not None else []

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        from django.conf import settings

        if not settings.WORKER_METRICS:
            return
        from dramatiq.middleware.prometheus import DB_PATH, Prometheus

        removed = remove_files_of_gone_processes(Path(DB_PATH))
        if removed:
            self.logger.debug("Removed %r metric files of gone processes.", removed)
        self.prometheus = Prometheus()
        self.prometheus.after_process_boot(broker)

    def _forward(name: str) -> Callable[..., None]:  # noqa: N805  (builds the hooks below)
        def hook(self: WorkerMetrics, *args: Any, **kwargs: Any) -> None:
            if self.prometheus is not None:
                getattr(self.prometheus, name)(*args, **kwargs)

        hook.__name__ = name
        return hook

    after_worker_shutdown = _forward("after_worker_shutdown")
    after_nack = _forward("after_nack")
    after_enqueue = _forward("after_enqueue")
    before_delay_message = _forward("before_delay_message")
    before_process_message = _forward("before_process_message")
    after_process_message = _forward("after_process_message")
    after_skip_message = _forward("after_skip_message")
    del _forward


_METRIC_FILE = re.compile(r"_(\d+)\.db$")


def remove_files_of_gone_processes(directory: Path) -> int:
    """Delete prometheus_client's multiprocess files (``<kind>_<pid>.db``) whose process no
    longer exists. Returns how many."""
    removed = 0
    for path in directory.glob("*.db"):
        match = _METRIC_FILE.search(path.name)
        if match is None or _process_exists(int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
