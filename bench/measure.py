"""Measuring one phase: requests GitHub served, rate-limit points, wall time, peak memory."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devtools.github_emulator import GitHubEmulator, RequestRecord


def request_kind(record: RequestRecord) -> str:
    """A short name for the endpoint a request hit ("GET /pulls/N", "GET /issues (list)")."""
    parts = record.path.strip("/").split("/")
    if parts[-1] == "graphql":
        return f"{record.method} /graphql"
    if parts[0] == "repos" and len(parts) >= 3:
        rest = parts[3:]
        if not rest:
            return f"{record.method} /repos/O/R"
        if len(rest) == 1:
            return f"{record.method} /{rest[0]} (list)"
        return f"{record.method} /{rest[0]}/N"
    return f"{record.method} {record.path}"


class RequestTally:
    """Moves the emulator's request log into counters as requests arrive.

    The emulator keeps every request it served; over thousands of requests that log would
    dominate the memory figures, so an emulator hook drains it before each request (the
    previous request is complete by then: clients here are serial) into a small Counter
    keyed by (token, endpoint, status).
    """

    def __init__(self, emulator: GitHubEmulator) -> None:
        self.emulator = emulator
        self.counts: Counter[tuple[str | None, str, int | None]] = Counter()
        emulator.add_hook(self._before_request)

    def _before_request(self, record: RequestRecord) -> None:
        self.drain()

    def drain(self) -> None:
        with self.emulator.lock:
            served = self.emulator.requests
            self.emulator.clear_requests()
        for record in served:
            self.counts[(record.token, request_kind(record), record.status)] += 1

    def reset(self) -> None:
        self.drain()
        self.counts.clear()

    def for_token(self, token: str) -> tuple[Counter[str], int]:
        """(requests by endpoint, how many were answered 304) for ``token``."""
        self.drain()
        kinds: Counter[str] = Counter()
        not_modified = 0
        for (tok, kind, status), n in self.counts.items():
            if tok == token:
                kinds[kind] += n
                not_modified += n if status == 304 else 0
        return kinds, not_modified


def rate_points_used(emulator: GitHubEmulator, token: str) -> int:
    """Points the token has used in its current windows: REST core (304s are refunded by the
    emulator, as by GitHub) plus GraphQL points."""
    state = emulator.token_state(token)
    if state is None:
        return 0
    return state.used + state.graphql_used


@dataclass
class Phase:
    """What one phase cost."""

    requests: int
    not_modified: int
    points: int
    seconds: float
    peak_bytes: int
    kinds: Counter[str] = field(default_factory=Counter)
    value: Any = None

    def breakdown(self) -> str:
        parts = [f"{n:,} {kind}" for kind, n in sorted(self.kinds.items(), key=lambda kv: -kv[1])]
        return " + ".join(parts) or "none"


def measure(
    emulator: GitHubEmulator,
    tally: RequestTally,
    token: str,
    fn: Callable[[], Any],
    *,
    trace_memory: bool,
) -> Phase:
    """Run ``fn`` once and measure it.

    Requests and points are those of ``token`` (ours and the baseline use different tokens).
    With ``trace_memory``, ``tracemalloc`` is started just before ``fn`` and stopped after it,
    so data made earlier (the emulator's seeded repositories, Django's start-up) is not
    counted; the emulator's per-request allocations in its own threads (rendering a page)
    are. Tracing slows Python code about 2x, so timed runs do not trace (``peak_bytes`` 0).
    """
    tally.reset()
    points_before = rate_points_used(emulator, token)
    gc.collect()
    if trace_memory:
        tracemalloc.start()
    started = time.perf_counter()
    peak = 0
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - started
        if trace_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    kinds, not_modified = tally.for_token(token)
    return Phase(
        requests=sum(kinds.values()),
        not_modified=not_modified,
        points=rate_points_used(emulator, token) - points_before,
        seconds=seconds,
        peak_bytes=peak,
        kinds=kinds,
        value=value,
    )
