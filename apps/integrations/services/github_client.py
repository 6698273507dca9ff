"""The one place that talks HTTP to GitHub, and the one error hierarchy for its answers.

Requests go through PyGithub's ``Requester`` (auth, base URL, connection pooling), but at the
level that returns status, headers and body without interpreting them: PyGithub's retry
machinery sleeps in the calling thread until a rate limit resets (up to an hour), which would
block a worker. Here every answer that is not a success becomes a typed ``GitHubError`` at
once, carrying what the caller needs to decide (when to come back), and nobody sleeps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.integrations import metrics
from apps.integrations.services.pacing import TokenPacer, pacer_for_token
from apps.integrations.services.rate_budget import BudgetScope, RateBudget, budget_for_token

if TYPE_CHECKING:
    from github import Github

    from apps.integrations.models import GitHubIntegration

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class GitHubError(Exception):
    """Anything GitHub (or the way to it) answered that is not a success.

    Messages never contain the token: they are built from the status and GitHub's own message.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GitHubUnauthorized(GitHubError):
    """401: the token was rejected (revoked, expired or wrong)."""


class GitHubNotConnected(GitHubError):
    """The integration has no credential (GitHub rejected it earlier); nothing was sent."""

    @classmethod
    def for_team(cls, team_slug: str) -> GitHubNotConnected:
        return cls(
            f"the GitHub integration of team {team_slug!r} is disconnected; "
            "reconnect it with: manage.py track_repo OWNER/NAME --team SLUG"
        )


class GitHubNotFound(GitHubError):
    """404: the repository (or object) does not exist or the token may not see it."""


class GitHubForbidden(GitHubError):
    """403 that is not a rate limit: the token lacks a permission. Permanent."""


class GitHubRequestError(GitHubError):
    """Another 4xx: the request itself was refused (e.g. 422). Permanent."""


class GitHubDeepPaginationError(GitHubRequestError):
    """422: GitHub refuses offset pages past about 10,000 items."""


class GitHubRateLimited(GitHubError):
    """A rate limit. What GitHub said comes with it; ``services.rate_limits`` says what it
    means in time (when to come back)."""


class GitHubPrimaryRateLimit(GitHubRateLimited):
    """The token's hourly budget is spent; ``reset_at`` is X-RateLimit-Reset (None when
    GitHub did not send it). ``scope``: which token budget (``services.rate_budget``) it is
    about, when the client knows; deferrals use it to spread the repositories sharing it."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        reset_at: datetime | None,
        scope: BudgetScope | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.reset_at = reset_at
        self.scope = scope


class GitHubBudgetExhausted(GitHubPrimaryRateLimit):
    """Refused here, nothing sent: the token's recorded budget is spent down to the floor
    this sync may not go below (the reserve for bulk syncs, 0 for interactive ones) until
    ``reset_at``. A primary rate limit to every caller."""


class GitHubSecondaryRateLimit(GitHubRateLimited):
    """A secondary limit (403 or 429). ``retry_after``: seconds from Retry-After, if sent;
    ``reset_at``: X-RateLimit-Reset when X-RateLimit-Remaining was 0; ``at``: when the answer
    came, which Retry-After counts from."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        retry_after: float | None,
        reset_at: datetime | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.reset_at = reset_at
        self.at = datetime.now(UTC)


class GitHubTransientError(GitHubError):
    """5xx, timeouts, dropped connections: worth retrying with backoff."""


def _message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return ""


def _int_header(headers: dict[str, str], name: str) -> int | None:
    try:
        return int(float(headers[name]))
    except (KeyError, TypeError, ValueError):
        return None


MID_RESPONSE = "GitHub closed the connection mid-response"


def error_from_transport(exc: BaseException, *, timeout: float | None) -> GitHubTransientError:
    """Say what went wrong on the way to or from GitHub, from what requests raised.

    requests and urllib3 wrap one another's exceptions (a read timeout mid-body arrives as
    ``requests.ConnectionError(ReadTimeoutError)``, a cut body as ``ChunkedEncodingError``
    around ``IncompleteRead``), so the outer type alone misleads: the whole chain is read.
    Messages name what happened, never the URL (its query) or the exception's own text.
    """
    import http.client

    import requests
    import urllib3

    chain = _exception_chain(exc)

    def found(*types: type[BaseException]) -> bool:
        return any(isinstance(link, types) for link in chain)

    after = f" after {timeout:g} s" if timeout else ""
    # urllib3's NewConnectionError is a ConnectTimeoutError too: refusals come first.
    if found(urllib3.exceptions.NewConnectionError):
        reasons = [link.strerror for link in chain if isinstance(link, OSError) and link.strerror]
        return GitHubTransientError(
            f"could not reach GitHub: {reasons[-1] if reasons else 'no connection'}"
        )
    if found(requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError):
        return GitHubTransientError(f"could not reach GitHub: no connection{after}")
    if found(requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        return GitHubTransientError(f"GitHub request timed out{after}")
    if found(requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError):
        return GitHubTransientError("GitHub answered with a body that could not be decoded")
    if found(
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        http.client.HTTPException,
        ConnectionError,
    ):
        return GitHubTransientError(MID_RESPONSE)
    return GitHubTransientError(f"GitHub request failed: {type(exc).__name__}")


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps: causes, contexts, exceptions among its
    arguments, urllib3's ``reason``."""
    chain: list[BaseException] = []
    pending = [exc]
    while pending and len(chain) < 32:
        link = pending.pop(0)
        if any(link is seen for seen in chain):
            continue
        chain.append(link)
        pending.extend(arg for arg in link.args if isinstance(arg, BaseException))
        for wrapped in (getattr(link, "reason", None), link.__cause__, link.__context__):
            if isinstance(wrapped, BaseException):
                pending.append(wrapped)
    return chain


def error_from_unreadable_body(
    status: int, headers: dict[str, str], text: str
) -> GitHubTransientError:
    """A success status whose body is not the JSON GitHub always sends with it."""
    if not text:
        # With neither Content-Length nor chunked encoding the header block itself was cut
        # (http.client takes the end of the stream for the end of the headers).
        framed = "content-length" in headers or "transfer-encoding" in headers
        return GitHubTransientError(
            f"GitHub answered {status} with an empty body" if framed else MID_RESPONSE
        )
    media_type = headers.get("content-type", "").split(";")[0].strip() or "no content type"
    return GitHubTransientError(
        f"GitHub answered {status} with a body that is not JSON ({media_type})"
    )


def error_from_response(status: int, headers: dict[str, str], body: Any) -> GitHubError:
    """Classify a GitHub error answer. ``headers`` keys are lower case.

    GitHub's rules (docs: "Rate limits for the REST API"): Retry-After, when present, is the
    wait; a secondary limit says so in its message and leaves X-RateLimit-Remaining above 0;
    a primary limit has X-RateLimit-Remaining 0 and X-RateLimit-Reset. A 429 can be either.
    """
    message = _message(body)
    lowered = message.lower()
    summary = f"GitHub answered {status}" + (f": {message}" if message else "")

    if status in (403, 429):
        retry_after = _int_header(headers, "retry-after")
        remaining = _int_header(headers, "x-ratelimit-remaining")
        reset = _int_header(headers, "x-ratelimit-reset")
        secondary = "secondary rate limit" in lowered or "abuse" in lowered
        primary = not secondary and (
            lowered.startswith("api rate limit exceeded") or remaining == 0
        )
        reset_at = datetime.fromtimestamp(reset, tz=UTC) if reset is not None else None
        if primary:
            return GitHubPrimaryRateLimit(summary, status=status, reset_at=reset_at)
        if secondary or status == 429 or retry_after is not None:
            return GitHubSecondaryRateLimit(
                summary,
                status=status,
                retry_after=retry_after,
                reset_at=reset_at if remaining == 0 else None,
            )
        return GitHubForbidden(summary, status=status)
    if status == 401:
        return GitHubUnauthorized(
            "GitHub rejected the credentials (401 Bad credentials)", status=status
        )
    if status == 404:
        return GitHubNotFound(summary, status=status)
    if status == 422 and "pagination" in lowered:
        return GitHubDeepPaginationError(summary, status=status)
    if status >= 500:
        return GitHubTransientError(summary, status=status)
    return GitHubRequestError(summary, status=status)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    data: Any


@dataclass
class GitHubClient:
    """A PyGithub connection for one token, with typed calls for the endpoints we use.

    ``requests_made`` counts HTTP requests sent (the API cost a sync reports);
    ``after_request`` is called after each successful answer (a sync renews its lease there);
    ``timeout`` is the one PyGithub was given, in seconds, for the errors to name;
    ``budget`` is the token's shared rate budget, taken before and recorded after every
    request.
    """

    github: Github
    pacer: TokenPacer | None = None
    budget: RateBudget | None = None
    requests_made: int = 0
    after_request: Callable[[], None] | None = None
    timeout: float | None = None

    # -- transport ----------------------------------------------------------------------------

    @metrics.observes_github_requests
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Response:
        """Send one request; return it if its status is in ``ok``, else raise a GitHubError."""
        # Loaded with PyGithub (see client_for_token), not with this module.
        import http.client

        import urllib3

        requester = self.github.requester
        resource = "graphql" if path == requester.graphql_url else "core"
        if self.budget is not None and (refusal := self.budget.take(resource)) is not None:
            logger.debug(
                "github.budget_refused",
                extra={
                    "resource": refusal.resource,
                    "remaining": refusal.remaining,
                    "limit": refusal.limit,
                    "reset_at": refusal.reset_at.isoformat(),
                    "reserve": self.budget.reserve,
                },
            )
            raise GitHubBudgetExhausted(
                f"rate budget of this token ({refusal.resource}) is down to "
                f"{refusal.remaining} of {refusal.limit}, not spent further until the reset",
                status=None,
                reset_at=refusal.reset_at,
                scope=self.budget.scope(refusal.resource, refusal.limit),
            )
        if self.pacer is not None:
            self.pacer.wait()
        self.requests_made += 1
        try:
            status, response_headers, text = requester.requestJson(
                method, path, parameters=params, headers=dict(headers or {}), input=body
            )
        # requests' own exceptions are OSErrors; urllib3's and http.client's are listed in
        # case one escapes requests' wrapping.
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            raise error_from_transport(exc, timeout=self.timeout) from exc
        except ValueError as exc:
            # PyGithub reads the rate-limit headers of every answer with int(float(...)).
            raise GitHubTransientError(
                "GitHub answered with headers that are not readable"
            ) from exc
        resource = self._record_budget(resource, status, response_headers)
        data: Any = None
        # Every success GitHub sends us carries JSON (a 204 or 304 carries nothing, and a 202,
        # a redelivery accepted, may carry nothing): an empty or unreadable body is an answer
        # cut short or replaced on the way, never "no items".
        if status in ok and status not in (202, 204, 304) and not text:
            raise error_from_unreadable_body(status, response_headers, text)
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                if status in ok:
                    raise error_from_unreadable_body(status, response_headers, text) from None
        if status in ok:
            if self.after_request is not None:
                self.after_request()
            return Response(status=status, headers=response_headers, data=data)
        error = self._scoped(
            error_from_response(status, response_headers, data), resource, response_headers
        )
        # DEBUG: the typed error reaches the caller, which decides what is worth reporting.
        logger.debug(
            "github.request_failed",
            extra={"method": method, "path": path, "status": status, "error": type(error).__name__},
        )
        raise error

    def _record_budget(self, resource: str, status: int, headers: dict[str, str]) -> str:
        """Record the budget an answer reports, success or error; returns the resource it
        names (GitHub's X-RateLimit-Resource, else the one the request was counted against)."""
        resource = headers.get("x-ratelimit-resource") or resource
        limit = _int_header(headers, "x-ratelimit-limit")
        remaining = _int_header(headers, "x-ratelimit-remaining")
        reset = _int_header(headers, "x-ratelimit-reset")
        if self.budget is None:
            return resource
        if limit is None or remaining is None or reset is None:
            self.budget.record_unmetered(resource)
            return resource
        self.budget.record(
            resource, limit=limit, remaining=remaining, reset=reset, charged=status != 304
        )
        return resource

    def _scoped(self, error: GitHubError, resource: str, headers: dict[str, str]) -> GitHubError:
        """``error``, told which token budget it is about when it is a primary limit."""
        if isinstance(error, GitHubPrimaryRateLimit) and self.budget is not None:
            error.scope = self.budget.scope(resource, _int_header(headers, "x-ratelimit-limit"))
        return error

    # -- endpoints ----------------------------------------------------------------------------

    def get_authenticated_user(self) -> dict[str, Any]:
        """https://docs.github.com/rest/users/users#get-the-authenticated-user"""
        return self.request("GET", "/user").data

    def get_repository(self, full_name: str) -> dict[str, Any]:
        """https://docs.github.com/rest/repos/repos#get-a-repository"""
        return self.request("GET", f"/repos/{full_name}").data

    def list_issues_page(
        self,
        full_name: str,
        *,
        since: datetime | None,
        page: int = 1,
        per_page: int = 100,
        sort: str = "updated",
        direction: str = "asc",
        etag: str | None = None,
    ) -> IssuesPage:
        """https://docs.github.com/rest/issues/issues#list-repository-issues

        One page of issues and pull requests (state=all) updated at or after ``since``. With
        ``etag`` the request is conditional: an unchanged page answers 304, which GitHub does
        not count against the rate limit, and comes back as ``not_modified``.
        """
        params: dict[str, Any] = {
            "state": "all",
            "sort": sort,
            "direction": direction,
            "per_page": per_page,
            "page": page,
        }
        if since is not None:
            params["since"] = format_github_time(since)
        response = self.request(
            "GET",
            f"/repos/{full_name}/issues",
            params=params,
            headers={"If-None-Match": etag} if etag else None,
            ok=(200, 304),
        )
        if response.status == 304:
            return IssuesPage(items=[], etag=etag, not_modified=True)
        return IssuesPage(items=response.data or [], etag=response.headers.get("etag"))

    def get_pull(self, full_name: str, number: int) -> dict[str, Any]:
        """https://docs.github.com/rest/pulls/pulls#get-a-pull-request"""
        return self.request("GET", f"/repos/{full_name}/pulls/{number}").data

    def get_pulls_details(self, full_name: str, numbers: Sequence[int]) -> PullDetails:
        """https://docs.github.com/graphql/reference/objects#pullrequest

        Detail fields of up to 100 pull requests in one GraphQL query (one alias per number;
        GitHub charges about one point per 100 nodes). A number GitHub cannot resolve (e.g. a
        PR transferred away) is reported in ``missing`` while the others keep their data:
        PyGithub's ``graphql_query`` would raise and drop them all, so errors are read here.
        """
        if len(numbers) > MAX_GRAPHQL_ALIASES:
            raise ValueError(f"at most {MAX_GRAPHQL_ALIASES} pull requests per query")
        owner, name = full_name.split("/", 1)
        query = pull_details_query(numbers)
        response = self.request(
            "POST",
            self.github.requester.graphql_url,
            body={"query": query, "variables": {"owner": owner, "name": name}},
        )
        body = response.data or {}
        missing: list[int] = []
        for error in body.get("errors") or []:
            kind = error.get("type")
            path = error.get("path") or []
            if kind == "RATE_LIMITED":
                detail = error.get("message", "")
                raise self._scoped(
                    error_from_response(
                        403,
                        {"x-ratelimit-remaining": "0", **response.headers},
                        {"message": f"API rate limit exceeded (GraphQL): {detail}"},
                    ),
                    "graphql",
                    response.headers,
                )
            if kind == "NOT_FOUND" and len(path) == 2 and str(path[1]).startswith("pr"):
                missing.append(int(str(path[1])[2:]))
            elif kind == "NOT_FOUND":
                raise GitHubNotFound(
                    f"GitHub GraphQL: {error.get('message', 'not found')}", status=404
                )
            else:
                message = f"GitHub GraphQL error: {error.get('message', 'unknown error')}"[:300]
                lowered = message.lower()
                # GitHub's timeouts and internal errors come back as 200 with an error entry
                # ("Something went wrong while executing your query"); worth retrying. Anything
                # else (a query GitHub cannot validate) would fail the same way every time.
                if kind in {"INTERNAL", "SERVICE_UNAVAILABLE", "TIMEOUT"} or (
                    "something went wrong" in lowered or "timeout" in lowered
                ):
                    raise GitHubTransientError(message)
                raise GitHubRequestError(message)
        repository = (body.get("data") or {}).get("repository") or {}
        found = {
            int(node["number"]): node for node in repository.values() if isinstance(node, dict)
        }
        return PullDetails(found=found, missing=missing)

    def list_repository_hooks(self, full_name: str) -> list[dict[str, Any]]:
        """https://docs.github.com/rest/repos/webhooks#list-repository-webhooks

        One page of 100: GitHub allows at most 20 hooks per event on a repository.
        """
        return self.request("GET", f"/repos/{full_name}/hooks", params={"per_page": 100}).data

    def create_repository_hook(
        self, full_name: str, *, url: str, secret: str, events: Sequence[str]
    ) -> dict[str, Any]:
        """https://docs.github.com/rest/repos/webhooks#create-a-repository-webhook"""
        body = {
            "name": "web",
            "active": True,
            "events": list(events),
            "config": _hook_config(url=url, secret=secret),
        }
        return self.request("POST", f"/repos/{full_name}/hooks", body=body, ok=(201,)).data

    def update_repository_hook(
        self, full_name: str, hook_id: int, *, url: str, secret: str, events: Sequence[str]
    ) -> dict[str, Any]:
        """https://docs.github.com/rest/repos/webhooks#update-a-repository-webhook

        Sends the whole config: GitHub replaces it, and a secret left out would be removed.
        """
        body = {
            "active": True,
            "events": list(events),
            "config": _hook_config(url=url, secret=secret),
        }
        return self.request("PATCH", f"/repos/{full_name}/hooks/{int(hook_id)}", body=body).data

    def delete_repository_hook(self, full_name: str, hook_id: int) -> None:
        """https://docs.github.com/rest/repos/webhooks#delete-a-repository-webhook"""
        self.request("DELETE", f"/repos/{full_name}/hooks/{int(hook_id)}", ok=(204,))

    def list_hook_deliveries_page(
        self, full_name: str, hook_id: int, *, cursor: str | None = None, per_page: int = 100
    ) -> HookDeliveriesPage:
        """https://docs.github.com/rest/repos/webhooks#list-deliveries-for-a-repository-webhook

        Newest first; GitHub pages these by the cursor in the ``Link`` header's next URL.
        """
        params: dict[str, Any] = {"per_page": per_page}
        if cursor:
            params["cursor"] = cursor
        response = self.request(
            "GET", f"/repos/{full_name}/hooks/{int(hook_id)}/deliveries", params=params
        )
        return HookDeliveriesPage(
            items=response.data or [], next_cursor=_next_cursor(response.headers.get("link", ""))
        )

    def redeliver_hook_delivery(self, full_name: str, hook_id: int, delivery_id: int) -> None:
        """https://docs.github.com/rest/repos/webhooks#redeliver-a-delivery-for-a-repository-webhook"""
        self.request(
            "POST",
            f"/repos/{full_name}/hooks/{int(hook_id)}/deliveries/{int(delivery_id)}/attempts",
            ok=(202,),
        )


MAX_GRAPHQL_ALIASES = 100
_PULLS_QUERY = """query($owner: String!, $name: String!) {
  repository(owner: $owner, name: $name) {
__ALIASES__
  }
}
fragment PullRequestDetail on PullRequest {
  databaseId number title state isDraft createdAt updatedAt closedAt mergedAt
  additions deletions changedFiles commits { totalCount }
  baseRefName headRefName url author { login }
}"""


def pull_details_query(numbers: Sequence[int]) -> str:
    """The GraphQL query for the detail fields of ``numbers``: one ``prN`` alias each."""
    aliases = "\n".join(
        f"    pr{int(number)}: pullRequest(number: {int(number)}) {{ ...PullRequestDetail }}"
        for number in numbers
    )
    return _PULLS_QUERY.replace("__ALIASES__", aliases)


@dataclass(frozen=True)
class IssuesPage:
    items: list[dict[str, Any]]
    etag: str | None
    not_modified: bool = False


@dataclass(frozen=True)
class PullDetails:
    found: dict[int, dict[str, Any]]
    missing: list[int]


@dataclass(frozen=True)
class HookDeliveriesPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _hook_config(*, url: str, secret: str) -> dict[str, str]:
    return {"url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0"}


def _next_cursor(link: str) -> str | None:
    """The ``cursor`` of the Link header's rel="next" URL (None on the last page)."""
    from urllib.parse import parse_qs, urlsplit

    for part in link.split(","):
        target, _, rel = part.partition(";")
        if 'rel="next"' in rel:
            cursor = parse_qs(urlsplit(target.strip().strip("<>")).query).get("cursor")
            return cursor[0] if cursor else None
    return None


def format_github_time(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, as GitHub documents for ``since``.

    PyGithub formats naive and aware datetimes alike without converting; a non-UTC aware
    value would be sent as the wrong instant, so conversion happens here.
    """
    if value.tzinfo is None:
        raise ValueError("GitHub timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_github_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def client_for_token(token: str, *, keep_reserve: bool = False) -> GitHubClient:
    """A client for a plaintext token (used before a credential exists, by track_repo).

    ``keep_reserve``: a bulk sync's client, which leaves GITHUB_RATE_RESERVE_FRACTION of the
    token's budget to interactive ones (``services.rate_budget``); without it the client may
    spend the budget to 0.
    """
    # Imported on first use: PyGithub and its HTTP stack take a few tenths of a second to
    # load (over a second without bytecode), which a command that stops before its first
    # request (an unknown repository, a bad flag) should not pay.
    from github import Auth, Github

    timeout = int(settings.GITHUB_TIMEOUT)
    github = Github(
        auth=Auth.Token(token),
        base_url=settings.GITHUB_API_URL,
        timeout=timeout,
        per_page=100,
        # No retries inside PyGithub: rate limits and Retry-After must reach the caller as
        # typed errors instead of sleeping this thread; transient errors are retried by the
        # task layer with backoff, where a worker is not blocked meanwhile.
        retry=None,
        # PyGithub's throttle is per client object; pacing is per token across all workers.
        seconds_between_requests=None,
        seconds_between_writes=None,
        lazy=True,
    )
    return GitHubClient(
        github=github,
        pacer=pacer_for_token(token),
        budget=budget_for_token(token, keep_reserve=keep_reserve),
        timeout=timeout,
    )


def client_for_integration(
    integration: GitHubIntegration, *, keep_reserve: bool = False
) -> GitHubClient:
    """A client authenticated with the integration's decrypted token (``keep_reserve``: as
    for ``client_for_token``).

    Raises GitHubNotConnected when the integration has no credential.
    """
    from apps.integrations.models import IntegrationCredential

    try:
        credential = integration.credential
    except IntegrationCredential.DoesNotExist:
        raise GitHubNotConnected.for_team(integration.team.slug) from None
    return client_for_token(credential.access_token.reveal(), keep_reserve=keep_reserve)
