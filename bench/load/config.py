"""The load run's sizes and the settings its processes get, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Settings of the workers and the scheduler, unless the environment sets them. A deferred
# rate-limited message returns after the window (60 s here, not GitHub's hour) plus this
# jitter; the sweep must not resend a fan-out that is still draining; the daily schedule
# must not fire during the run (the fan-outs are the benchmark's own, via sync_all).
PROCESS_SETTINGS = {
    "GITHUB_RATE_LIMIT_JITTER_SECONDS": "5",
    "SYNC_STUCK_AFTER_SECONDS": "900",
    "GITHUB_TOKEN_MIN_INTERVAL_MS": "70",
    "SYNC_SCHEDULE": "0 0 1 1 *",
    "LOG_LEVEL": "WARNING",
}


class LoadError(Exception):
    """The run cannot go on; the message says why (one line)."""


class ConfigError(ValueError):
    """A LOAD_* variable that is not usable; the message names it."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _number(name: str, default: float, *, minimum: float, integer: bool = True) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {text!r}")
    return value


@dataclass(frozen=True)
class LoadConfig:
    repos: int  # N
    teams: int  # K
    workers: int  # W processes
    threads: int  # T threads each
    quick: bool
    latency_ms: float
    error_rate: float
    rate_window_seconds: int
    seed: int
    round_timeout_seconds: int
    changed_share: float = 0.10  # round 2: repositories changed on GitHub
    sync_now_repos: int = 20
    dry_tokens: int = 3
    process_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> LoadConfig:
        quick = _flag("LOAD_QUICK")
        repos = int(_number("LOAD_REPOS", 300 if quick else 2_000, minimum=1))
        teams = int(_number("LOAD_TEAMS", 10 if quick else 50, minimum=5))
        if teams > repos:
            raise ConfigError(f"LOAD_TEAMS ({teams}) must not exceed LOAD_REPOS ({repos})")
        error_rate = _number("LOAD_ERROR_RATE", 0.01, minimum=0, integer=False)
        if error_rate >= 0.5:
            raise ConfigError(f"LOAD_ERROR_RATE must be below 0.5, got {error_rate:g}")
        return cls(
            repos=repos,
            teams=teams,
            workers=int(_number("LOAD_WORKERS", 2, minimum=1)),
            threads=int(_number("LOAD_THREADS", 8, minimum=1)),
            quick=quick,
            latency_ms=_number("LOAD_LATENCY_MS", 20, minimum=0, integer=False),
            error_rate=error_rate,
            rate_window_seconds=int(_number("LOAD_RATE_WINDOW_SECONDS", 60, minimum=10)),
            seed=int(_number("LOAD_SEED", 20_261_201, minimum=0)),
            round_timeout_seconds=int(_number("LOAD_ROUND_TIMEOUT_SECONDS", 1800, minimum=10)),
            process_settings={
                name: os.environ.get(name, "").strip() or default
                for name, default in PROCESS_SETTINGS.items()
            },
        )
