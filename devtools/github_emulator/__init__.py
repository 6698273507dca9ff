"""A local GitHub REST API emulator (standard library and graphql-core, no Django).

PyGithub talks to it over real loopback HTTP exactly like it talks to api.github.com::

    from devtools.github_emulator import GitHubEmulator

    with GitHubEmulator() as emu:              # prefix="/api/v3" emulates GitHub Enterprise
        emu.add_token("tok", login="octocat")
        emu.add_repo("acme/widgets")
        emu.add_pull("acme/widgets", title="Fix", author="alice")
        gh = github.Github(auth=github.Auth.Token("tok"), base_url=emu.api_url, retry=None)

Endpoints: GET /user, /rate_limit, /repos/{o}/{r}, /repos/{o}/{r}/issues[/{n}],
/repos/{o}/{r}/pulls[/{n}], and ``POST /graphql`` (``/api/graphql`` under the "/api/v3" prefix,
as PyGithub's ``requester.graphql_url``) for ``rateLimit`` and aliased
``repository { pullRequest(number:) }`` queries (see ``graphql.py``). Reproduces auth (401),
offset pagination with Link headers, the 10,000-item deep-page 422, primary (REST "core" and a
separate "graphql" budget, ``set_rate_limit`` / ``set_graphql_rate_limit``) and secondary rate
limits, ETag/If-None-Match 304s that do not consume the limit, and injected failures:
``fail_next`` (a status), ``secondary_limit_next``, ``outage`` (a 5xx storm that ends at an
emulator-clock time or after N answers), ``misbehave_next`` (garbled answers: truncated JSON, a
proxy's HTML page, rate-limit headers that are not numbers, a connection cut inside the headers
or the body, a stall before the answer or mid-body) and ``latency``. For load runs:
``GitHubEmulator(rate_window_seconds=60, error_rate=0.01, error_seed=1)`` shortens every
rate-limit window and answers a seeded random share of requests 502; a primary-limit refusal
is marked in the log (``RequestRecord.rate_limited``, ``rate_limit_reset``).
Run ``python -m devtools.github_emulator -h`` for the CLI.
"""

from .server import GitHubEmulator, RequestRecord
from .store import GHOST_ID, GHOST_LOGIN, ItemRecord, RepoRecord, TokenState

__all__ = [
    "GHOST_ID",
    "GHOST_LOGIN",
    "GitHubEmulator",
    "ItemRecord",
    "RepoRecord",
    "RequestRecord",
    "TokenState",
]
