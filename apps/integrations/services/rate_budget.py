"""Each GitHub token's rate budget, shared by every worker through Redis.

Without it a message learns that its token is spent by asking GitHub: a fan-out of 500
repositories on a dry token sends 500 requests GitHub refuses, and all 500 come back at the
same reset to be refused again. Every answer GitHub sends carries the token's budget
(``X-RateLimit-Limit/-Remaining/-Reset/-Resource``, REST "core" and "graphql" counted apart);
it is kept here, per token and resource, and every request first takes one unit of it:

- A request that would take the budget below its floor is refused before anything is sent
  (``take`` returns a ``Refusal``; the client raises ``GitHubBudgetExhausted``, a primary rate
  limit, so callers defer to the reset as they would after GitHub's 403). Bulk syncs (the
  daily fan-out, the sweep, their continuations) keep ``GITHUB_RATE_RESERVE_FRACTION`` of the
  limit untouched for an operator's "sync now" and webhooks; interactive ones may spend it
  all.
- Taking is atomic (a Lua script): concurrent workers on one token cannot all see "5 left"
  and all go. While a window is unknown (never seen, or its reset has passed) one request
  goes first and the others wait for its answer (at most ``PROBE_WAIT_SECONDS``, then they
  go too): a token that is already dry costs one refused request, not one per worker. A
  token whose answers carry no rate-limit headers (a GitHub Enterprise Server with limits
  off) is marked so and not waited for.
- Answers may arrive out of order: within one reset the lower remaining wins (GitHub's own
  count only goes down within a window), an answer for an older reset is ignored, a later
  reset replaces the window. A 304 (which GitHub does not charge) gives its unit back.
- Messages deferred to one reset take numbered ``Ticket``s, which ``rate_limits.deferral_for``
  turns into a place in the windows after it: as many repositories per window as the budget
  they will find covers (``GITHUB_RATE_COST_PER_SYNC`` each), not all at once.

Times are epoch seconds as GitHub sends them, compared with this machine's clock (as the
deferral delays are). Tokens are identified by ``pacing.token_digest``, never stored. Keys
expire after their reset. Without Redis the budget steps aside with one warning per client
and GitHub's answers decide, as before.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis
from django.conf import settings

from apps.integrations.services.pacing import _redis_client, token_digest

if TYPE_CHECKING:
    from apps.integrations.services.github_client import GitHubPrimaryRateLimit

logger = logging.getLogger(__name__)

KEY_PREFIX = "tformance:budget:"
# How long after its reset a window's ticket counter is kept: messages deferred to a reset
# are all refused before it, so the counter is done with once it passes.
TICKETS_TTL_AFTER_RESET = 3600

# A request sent while the window is unknown holds the probe this long at most (an answer
# releases it); the others wait this long at most before going anyway.
PROBE_TTL_MS = 5_000
PROBE_WAIT_SECONDS = 5.0
PROBE_POLL_SECONDS = 0.05
# How long a budget whose answers carried no rate-limit headers is taken for unlimited.
UNLIMITED_TTL_SECONDS = 3600

# KEYS: the budget hash, its probe key; ARGV: now (epoch s), the reserve fraction, the probe
# TTL (ms). Returns {1} (go), {2} (another request is finding out what the window holds:
# wait) or {0, limit, remaining, reset} (refused). An unknown or past window lets one request
# go without counting it: its answer says what the new window holds.
_TAKE = """
local state = redis.call('HMGET', KEYS[1], 'limit', 'remaining', 'reset', 'unlimited')
local limit, remaining, reset = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
if not (limit and remaining and reset) or reset <= tonumber(ARGV[1]) then
  if state[4] or redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
    return {1}
  end
  return {2}
end
local floor = math.ceil(limit * tonumber(ARGV[2]) - 1e-9)
if remaining - 1 < floor then
  return {0, limit, remaining, reset}
end
redis.call('HINCRBY', KEYS[1], 'remaining', -1)
return {1}
"""

# KEYS: the budget hash, its probe key; ARGV: limit, remaining, reset (epoch s), refund (1
# for an answer GitHub did not charge). Returns 1 if recorded, 0 for an answer from an older
# window.
_RECORD = """
redis.call('DEL', KEYS[2])
local limit, remaining, reset = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'remaining', 'reset')
local stored_remaining, stored_reset = tonumber(state[1]), tonumber(state[2])
if stored_remaining and stored_reset then
  if reset < stored_reset then
    return 0
  end
  if reset == stored_reset then
    remaining = math.min(remaining, stored_remaining + tonumber(ARGV[4]))
  end
end
redis.call('HSET', KEYS[1], 'limit', limit, 'remaining', remaining, 'reset', reset)
redis.call('HDEL', KEYS[1], 'unlimited')
redis.call('EXPIREAT', KEYS[1], reset + 60)
return 1
"""

# KEYS: the budget hash, its probe key; ARGV: how long to take it for unlimited (s). An
# answer without rate-limit headers: nobody waits for a probe of this budget meanwhile.
_UNMETERED = """
redis.call('DEL', KEYS[2])
if redis.call('HEXISTS', KEYS[1], 'reset') == 0 then
  redis.call('HSET', KEYS[1], 'unlimited', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def reserve_units(limit: int, fraction: float) -> int:
    """The units of a ``limit`` that a sync keeping ``fraction`` in reserve leaves untouched
    (the same rounding as the Lua script's floor)."""
    return math.ceil(limit * fraction - 1e-9)


@dataclass(frozen=True)
class BudgetScope:
    """Which budget a rate limit belongs to: a token (by digest) and a resource; ``limit``
    is that budget's size per window, when known."""

    token_digest: str
    resource: str
    limit: int | None


@dataclass(frozen=True)
class Refusal:
    """A request refused here: the token's ``resource`` budget holds ``remaining`` of
    ``limit`` until ``reset_at``, and this sync may not go below its floor."""

    resource: str
    limit: int
    remaining: int
    reset_at: datetime


@dataclass(frozen=True)
class Ticket:
    """A deferred message's place among those deferred to the same reset: ``number`` (from
    0) messages of ``cost`` units each came before it, and bulk syncs may spend ``usable``
    units per window."""

    number: int
    cost: int
    usable: int


class RateBudget:
    """One token's budgets (REST and GraphQL), as one client (one sync) uses them.

    ``reserve``: the fraction of each limit this client leaves untouched (0 for interactive
    syncs). ``client``: Redis, or None for no budget at all.
    """

    def __init__(self, token: str, *, reserve: float, client: redis.Redis | None) -> None:
        self.digest = token_digest(token)
        self.reserve = reserve
        self._client = client
        self._take = client.register_script(_TAKE) if client is not None else None
        self._record = client.register_script(_RECORD) if client is not None else None
        self._unmetered = client.register_script(_UNMETERED) if client is not None else None

    def key(self, resource: str) -> str:
        return f"{KEY_PREFIX}{self.digest}:{resource}"

    def keys(self, resource: str) -> list[str]:
        return [self.key(resource), f"{self.key(resource)}:probe"]

    def scope(self, resource: str, limit: int | None) -> BudgetScope:
        return BudgetScope(token_digest=self.digest, resource=resource, limit=limit)

    def take(self, resource: str) -> Refusal | None:
        """Take one unit of ``resource`` for a request about to be sent; a ``Refusal`` when
        the budget is known to be spent down to this client's floor."""
        deadline = time.monotonic() + PROBE_WAIT_SECONDS
        while True:
            if self._take is None:
                return None
            try:
                answer = self._take(
                    keys=self.keys(resource), args=[time.time(), self.reserve, PROBE_TTL_MS]
                )
            except redis.RedisError as exc:
                self._unavailable(exc)
                return None
            if int(answer[0]) != 2:
                break
            if time.monotonic() > deadline:
                return None  # the probe's answer is late: GitHub's answers decide
            time.sleep(PROBE_POLL_SECONDS)
        if int(answer[0]) == 1:
            return None
        limit, remaining, reset = (int(value) for value in answer[1:4])
        return Refusal(
            resource=resource,
            limit=limit,
            remaining=remaining,
            reset_at=datetime.fromtimestamp(reset, tz=UTC),
        )

    def record(
        self, resource: str, *, limit: int, remaining: int, reset: int, charged: bool = True
    ) -> None:
        """Record the budget an answer reported for ``resource`` (``reset``: epoch seconds).
        ``charged=False`` (a 304, which GitHub does not count) gives back the unit taken for
        it."""
        if self._record is None:
            return
        try:
            self._record(
                keys=self.keys(resource), args=[limit, remaining, reset, 0 if charged else 1]
            )
        except redis.RedisError as exc:
            self._unavailable(exc)

    def record_unmetered(self, resource: str) -> None:
        """An answer for ``resource`` without rate-limit headers: do not hold other requests
        back to learn a window it will not tell."""
        if self._unmetered is None:
            return
        try:
            self._unmetered(keys=self.keys(resource), args=[UNLIMITED_TTL_SECONDS])
        except redis.RedisError as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: redis.RedisError) -> None:
        # Once per client: a sync then runs as it did before budgets, GitHub's answers decide.
        logger.warning("github.rate_budget_unavailable", extra={"error": type(exc).__name__})
        self._take = self._record = self._unmetered = self._client = None


def budget_for_token(token: str, *, keep_reserve: bool) -> RateBudget:
    """The budget of ``token`` for one client: bulk syncs ``keep_reserve``, interactive
    ones (an operator's "sync now", the CLI) may spend everything."""
    reserve = settings.GITHUB_RATE_RESERVE_FRACTION if keep_reserve else 0.0
    return RateBudget(token, reserve=reserve, client=_redis_client(settings.REDIS_URL))


def take_ticket(limit: GitHubPrimaryRateLimit) -> Ticket | None:
    """A numbered place among the bulk messages deferred to ``limit``'s reset, for
    ``rate_limits.deferral_for`` to spread them; None when the limit does not say which
    budget and reset it is about, or Redis cannot count."""
    scope = limit.scope
    if scope is None or scope.limit is None or limit.reset_at is None:
        return None
    reset = int(limit.reset_at.timestamp())
    key = f"{KEY_PREFIX}{scope.token_digest}:{scope.resource}:tickets:{reset}"
    try:
        pipeline = _redis_client(settings.REDIS_URL).pipeline(transaction=False)
        pipeline.incr(key)
        pipeline.expireat(key, reset + TICKETS_TTL_AFTER_RESET)
        taken = int(pipeline.execute()[0])
    except redis.RedisError as exc:
        logger.warning("github.rate_budget_unavailable", extra={"error": type(exc).__name__})
        return None
    usable = scope.limit - reserve_units(scope.limit, settings.GITHUB_RATE_RESERVE_FRACTION)
    return Ticket(number=taken - 1, cost=settings.GITHUB_RATE_COST_PER_SYNC, usable=max(usable, 1))
