"""HTTP front end of the GitHub emulator (``http.server``, standard library only)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import graphql, render
from .hooks import Webhooks
from .store import RATE_WINDOW_SECONDS, Store, TokenState, User, epoch, parse_iso8601

JSON_TYPE = "application/json; charset=utf-8"
DOCS = "https://docs.github.com/rest"
GRAPHQL_DOCS = "https://docs.github.com/graphql"
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30
MAX_OFFSET = 10_000
DEEP_PAGE_MESSAGE = (
    "Pagination with the page parameter is not supported for large datasets, "
    "please use cursor based pagination (after/before)"
)

_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("user", re.compile(r"/user")),
    ("repo", re.compile(_REPO)),
    ("issues", re.compile(_REPO + r"/issues")),
    ("issue", re.compile(_REPO + r"/issues/(?P<number>\d+)")),
    ("pulls", re.compile(_REPO + r"/pulls")),
    ("pull", re.compile(_REPO + r"/pulls/(?P<number>\d+)")),
]


@dataclass(slots=True)
class RequestRecord:
    """One request seen by the emulator. Passed to hooks (status still None) and logged."""

    seq: int
    method: str
    path: str  # without the prefix
    query: dict[str, str]
    token: str | None
    status: int | None = None
    at: datetime | None = None  # emulator clock when the request arrived
    headers: dict[str, str] = field(default_factory=dict)  # request headers, lower-cased names
    request_id: str = ""
    # GraphQL requests (path "/graphql"): the pullRequest(number:) values asked for, in query
    # order (one per alias; filled before hooks run; none for a rejected document), and the
    # points charged (0 if none).
    graphql_numbers: list[int] = field(default_factory=list)
    graphql_cost: int = 0
    # The fault injected into this answer ("outage", "random_error", or one of FAULTS), ""
    # for none.
    fault: str = ""
    # A refusal for the primary rate limit: the budget that ran dry ("core" or "graphql"; ""
    # otherwise) and the reset time of its window (epoch seconds), which tells windows apart.
    rate_limited: str = ""
    rate_limit_reset: int = 0


# How ``misbehave_next`` can garble an answer (see there).
FAULTS = frozenset(
    {"truncated_json", "html", "garbled_headers", "cut_headers", "cut_body", "stall", "stall_body"}
)
# Applied to GitHub's own answer on its way out; "html" replaces the answer instead.
_TRANSPORT_FAULTS = FAULTS - {"html"}

PROXY_ERROR_PAGE = b"""<!DOCTYPE html>
<html><head><title>502 Bad Gateway</title></head>
<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response from an upstream
server.</p><hr><address>corporate-proxy/2.4 Server at api.github.com Port 443</address>
</body></html>
"""


@dataclass(slots=True)
class _Injection:
    kind: str  # "fail", "secondary", "outage" or one of FAULTS
    status: int
    count: float  # answers left; math.inf: until ``until``
    path_contains: str | None
    retry_after: int | None = None
    seconds: float = 0.0  # how long a stall lasts
    statuses: tuple[int, ...] = ()  # an outage's answers, in turn
    until: datetime | None = None  # an outage ends when the emulator clock reaches it
    served: int = 0


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class _Response:
    __slots__ = ("status", "headers", "body", "_raw", "fault")

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self._raw: bytes | None = None
        self.fault: _Injection | None = None  # how to garble it on the way out

    @property
    def raw(self) -> bytes:
        """The encoded JSON body (empty for a 304 / no body), encoded once."""
        if self._raw is None:
            no_body = self.body is None or self.status == 304
            self._raw = b"" if no_body else _encode(self.body)
        return self._raw


def _error(status: int, message: str, docs: str = DOCS, **extra: Any) -> _Response:
    body = {"message": message, **extra, "documentation_url": docs, "status": str(status)}
    return _Response(status, body)


def _not_found() -> _Response:
    return _error(404, "Not Found")


def _validation_failed(resource: str, field_name: str) -> _Response:
    errors = [{"resource": resource, "field": field_name, "code": "invalid"}]
    return _error(422, "Validation Failed", errors=errors)


def _parse_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: GitHubEmulator):
        self.emulator = emulator
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.open_connections)
            self.open_connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return "GitHub.com"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return format_datetime(self.server.emulator.now(), usegmt=True)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emu = self.server.emulator
        response = emu._serve(self.command, self.path, self.headers, body)
        raw = response.raw
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != 304:
            self.send_header("Content-Length", str(len(raw)))
        if response.fault is not None:
            self._misbehave(response.fault, raw)
            return
        self.end_headers()
        if raw and self.command != "HEAD":
            self.wfile.write(raw)

    def _misbehave(self, fault: _Injection, raw: bytes) -> None:
        """Send the answer whose status and headers are buffered, garbled as ``fault`` says."""
        # http.server holds the status line and headers until end_headers(); take them to
        # send on the fault's terms instead.
        head = b"".join(self._headers_buffer) + b"\r\n"
        self._headers_buffer = []
        body = raw if self.command != "HEAD" else b""
        self.close_connection = True
        emu = self.server.emulator
        try:
            if fault.kind == "cut_headers":
                # Cut inside the header block: the status line and the first headers arrive
                # (Content-Length, the last one, does not), then the server hangs up.
                self.wfile.write(head[: max(head.index(b"\r\n") + 2, len(head) // 2)])
            elif fault.kind == "cut_body":
                self.wfile.write(head + body[: len(body) // 2])
            elif fault.kind == "stall":
                emu._stall(fault.seconds)
                self.wfile.write(head + body)
            elif fault.kind == "stall_body":
                self.wfile.write(head + body[: len(body) // 2])
                emu._stall(fault.seconds)
                self.wfile.write(body[len(body) // 2 :])
            else:  # truncated_json, garbled_headers: the answer is garbled already
                self.wfile.write(head + body)
        except OSError:
            pass  # the client gave up (a stall outlasted its timeout): nobody to answer
        if fault.kind in ("cut_headers", "cut_body"):
            # Hang up now, not after http.server's tidy shutdown: the client reads what it
            # got, then end of stream.
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class GitHubEmulator(Store):
    """A local GitHub REST API emulator that PyGithub can talk to over loopback HTTP.

    See the package docstring for the API. ``start()`` binds 127.0.0.1 on a free port.

    ``rate_window_seconds``: the length of every token's primary rate-limit window (GitHub:
    an hour). ``error_rate``: the fraction of requests answered 502, drawn at random before
    authentication and rate limiting (``RequestRecord.fault`` "random_error"); ``error_seed``
    seeds that draw, so two runs fail about the same share of requests.
    """

    def __init__(
        self,
        prefix: str = "",
        latency: float = 0.0,
        host: str = "127.0.0.1",
        *,
        rate_window_seconds: int = RATE_WINDOW_SECONDS,
        error_rate: float = 0.0,
        error_seed: int | None = None,
    ):
        super().__init__(rate_window_seconds=rate_window_seconds)
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, got {error_rate!r}")
        self.error_rate = error_rate
        self._error_draws = random.Random(error_seed)  # noqa: S311 - a fault schedule, not a secret
        prefix = prefix.strip()
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix.rstrip("/")
        self.latency = latency
        self.host = host
        self.hook_errors: list[BaseException] = []
        self._hooks: list[Callable[[RequestRecord], Any]] = []
        self._requests: list[RequestRecord] = []
        self._injections: list[_Injection] = []
        # Set when the emulator stops, so a stalled answer does not outlive it.
        self._stalls_released = threading.Event()
        self._seq = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        # Repository webhooks (``hooks.py``); not ``add_hook``, which observes requests.
        self.webhooks = Webhooks(self)

    # ------------------------------------------------------------------ webhooks

    def _item_changed(self, state: Any, item: Any, action: str) -> None:
        self.webhooks.pull_request_changed(state, item, action, sender=item.author)

    def _repo_renamed(self, state: Any, old_name: str) -> None:
        self.webhooks.repository_renamed(state, old_name)

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> GitHubEmulator:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stalls_released.clear()
        self._server = _Server((self.host, port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="github-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stalls_released.set()
        self.webhooks.stop()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running; call start()")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + self.prefix

    @property
    def graphql_path(self) -> str:
        """Where GraphQL is served: "/graphql", or "/api/graphql" for the "/api/v3" prefix
        (derived from the prefix as PyGithub derives ``requester.graphql_url``)."""
        return self.prefix.removesuffix("/v3") + "/graphql"

    @property
    def graphql_url(self) -> str:
        return self.url + self.graphql_path

    # ------------------------------------------------------------------ hooks, log, injection

    def add_hook(self, fn: Callable[[RequestRecord], Any]) -> None:
        with self.lock:
            self._hooks.append(fn)

    def remove_hook(self, fn: Callable[[RequestRecord], Any]) -> None:
        with self.lock:
            self._hooks.remove(fn)

    @property
    def requests(self) -> list[RequestRecord]:
        with self.lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self.lock:
            self._requests.clear()

    def count_requests(
        self,
        path_contains: str | None = None,
        method: str | None = None,
        status: int | None = None,
    ) -> int:
        with self.lock:
            return sum(
                1
                for r in self._requests
                if (path_contains is None or path_contains in r.path)
                and (method is None or r.method == method.upper())
                and (status is None or r.status == status)
            )

    def fail_next(self, status: int = 502, count: int = 1, path_contains: str | None = None):
        """Answer the next ``count`` requests (whose path contains ``path_contains``) with
        ``status`` and a small JSON body, before authentication and rate limiting."""
        with self.lock:
            self._injections.append(_Injection("fail", status, count, path_contains))

    def secondary_limit_next(
        self,
        status: int = 403,
        retry_after: int | None = 60,
        count: int = 1,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``count`` authenticated requests with a secondary-rate-limit error."""
        if status not in (403, 429):
            raise ValueError("secondary rate limits answer 403 or 429")
        with self.lock:
            self._injections.append(
                _Injection("secondary", status, count, path_contains, retry_after)
            )

    def misbehave_next(
        self,
        fault: str,
        *,
        count: int = 1,
        path_contains: str | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Garble the next ``count`` answers (to requests whose path contains
        ``path_contains``) the way a flaky network or a proxy on the way does. ``fault``:

        - ``"truncated_json"``: GitHub's answer with the first half of its body, and a
          Content-Length that agrees (a proxy that cut it short);
        - ``"html"``: 200 with a proxy's HTML error page instead of GitHub's answer (nothing
          reaches GitHub: no authentication, no rate limit charged);
        - ``"garbled_headers"``: GitHub's answer with X-RateLimit-Remaining and
          X-RateLimit-Reset that are not numbers;
        - ``"cut_headers"``: the status line and part of the headers, then the server closes
          the connection;
        - ``"cut_body"``: the headers (Content-Length of the whole body) and half the body,
          then the server closes the connection;
        - ``"stall"``: nothing for ``seconds``, then GitHub's answer if the client still waits;
        - ``"stall_body"``: the headers and half the body, nothing for ``seconds``, then the
          rest.

        Except for ``"html"``, GitHub served the request (it is logged with its status and
        charged) and the fault happened on the way back; ``RequestRecord.fault`` names it.
        An answer without a body (a 304) is truncated to itself. Stalls end early when the
        emulator stops.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
        if fault.startswith("stall") and seconds <= 0:
            raise ValueError("a stall needs seconds > 0")
        with self.lock:
            self._injections.append(_Injection(fault, 200, count, path_contains, seconds=seconds))

    def outage(
        self,
        *,
        until: datetime | None = None,
        requests: int | None = None,
        statuses: tuple[int, ...] = (502, 503),
        path_contains: str | None = None,
    ) -> None:
        """A 5xx storm: answer every request (whose path contains ``path_contains``) with
        ``statuses`` in turn and a small JSON body, before authentication and rate limiting,
        until the emulator clock reaches ``until`` (``advance()`` moves it) or ``requests``
        requests have been answered so, whichever comes first."""
        if until is None and requests is None:
            raise ValueError("an outage ends at a time (until=) or after requests=")
        if not statuses or any(status < 500 for status in statuses):
            raise ValueError("an outage answers 5xx statuses")
        with self.lock:
            self._injections.append(
                _Injection(
                    "outage",
                    statuses[0],
                    math.inf if requests is None else requests,
                    path_contains,
                    statuses=tuple(statuses),
                    until=until,
                )
            )

    def _take_injection(self, kinds: str | frozenset[str], path: str) -> _Injection | None:
        """The first injection of one of ``kinds`` that applies to ``path``, counted as used:
        a snapshot, whose ``status`` is this answer's (an outage's statuses take turns)."""
        kinds = frozenset({kinds}) if isinstance(kinds, str) else kinds
        now = self.now()
        with self.lock:
            for inj in list(self._injections):
                if inj.until is not None and now >= inj.until:
                    self._injections.remove(inj)
                    continue
                if inj.kind in kinds and (inj.path_contains is None or inj.path_contains in path):
                    if inj.statuses:
                        inj.status = inj.statuses[inj.served % len(inj.statuses)]
                    inj.served += 1
                    inj.count -= 1
                    if inj.count <= 0:
                        self._injections.remove(inj)
                    return replace(inj)
        return None

    def _random_error(self) -> bool:
        with self.lock:
            return self._error_draws.random() < self.error_rate

    def _stall(self, seconds: float) -> None:
        self._stalls_released.wait(seconds)

    # ------------------------------------------------------------------ request pipeline

    def _serve(self, method: str, raw_target: str, headers: Any, body: bytes = b"") -> _Response:
        if self.latency:
            time.sleep(self.latency)
        target = urlsplit(raw_target)
        query_pairs = parse_qsl(target.query, keep_blank_values=True)
        raw_path = target.path
        in_prefix = not self.prefix or (
            raw_path == self.prefix or raw_path.startswith(self.prefix + "/")
        )
        path = raw_path[len(self.prefix) :] if in_prefix else raw_path
        gql = None
        if method == "POST" and raw_path == self.graphql_path:
            gql = graphql.prepare(body)  # pure: no store access
            in_prefix, path = True, "/graphql"
        with self.lock:
            self._seq += 1
            seq = self._seq
            hooks = list(self._hooks)
        record = RequestRecord(
            seq=seq,
            method=method,
            path=path or "/",
            query=dict(query_pairs),
            token=_parse_token(headers.get("Authorization")),
            at=self.now(),
            headers={k.lower(): v for k, v in headers.items()},
            request_id=f"E{seq:06X}:{self._port:04X}:{seq * 7919:06X}",
            graphql_numbers=list(gql.numbers) if gql is not None else [],
        )
        response = None
        for hook in hooks:  # outside the lock: hooks may mutate the store
            try:
                hook(record)
            except Exception as exc:  # noqa: BLE001 - surfaced via hook_errors and a 500
                self.hook_errors.append(exc)
                response = _error(500, f"emulator hook failed: {exc!r}")
        if response is None:
            host = headers.get("Host") or f"{self.host}:{self._port}"
            response = self._respond(record, in_prefix, query_pairs, host, gql, body)
            fault = self._take_injection(_TRANSPORT_FAULTS, record.path)
            if fault is not None:
                response.fault, record.fault = fault, fault.kind
                if fault.kind == "truncated_json":
                    response._raw = response.raw[: len(response.raw) // 2]
                elif fault.kind == "garbled_headers":
                    response.headers["X-RateLimit-Remaining"] = "plenty"
                    response.headers["X-RateLimit-Reset"] = "soon"
        response.headers.setdefault("Content-Type", JSON_TYPE)
        response.headers["X-GitHub-Request-Id"] = record.request_id
        record.status = response.status
        with self.lock:
            self._requests.append(record)
        return response

    def _respond(
        self,
        req: RequestRecord,
        in_prefix: bool,
        query_pairs: list[tuple[str, str]],
        host: str,
        gql: graphql.Prepared | None = None,
        body: bytes = b"",
    ) -> _Response:
        inj = self._take_injection(frozenset({"fail", "outage", "html"}), req.path)
        if inj is not None and inj.kind == "html":
            req.fault = "html"
            response = _Response(200, headers={"Content-Type": "text/html; charset=utf-8"})
            response._raw = PROXY_ERROR_PAGE
            return response
        if inj is not None:
            if inj.kind == "outage":
                req.fault = "outage"
            try:
                phrase = HTTPStatus(inj.status).phrase
            except ValueError:
                phrase = "Error"
            return _error(inj.status, phrase)
        if self.error_rate and self._random_error():
            req.fault = "random_error"
            return _error(502, "Server Error")
        if not in_prefix:
            return _not_found()
        token = self.token_state(req.token)
        if token is None:
            return _error(401, "Bad credentials")
        inj = self._take_injection("secondary", req.path)
        if inj is not None:
            response = _error(
                inj.status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                "try again. If you reach out to GitHub Support for help, please include the "
                f"request ID {req.request_id}.",
                SECONDARY_DOCS,
            )
            resource = "core" if gql is None else "graphql"
            response.headers.update(self._rate_headers(token, resource))
            if inj.retry_after is not None:
                response.headers["Retry-After"] = str(inj.retry_after)
            return response

        ctx = render.Ctx(api=f"http://{host}{self.prefix}", html=f"http://{host}", store=self)
        if gql is not None:
            return self._graphql(req, gql, token, ctx)
        if req.path == "/rate_limit" and req.method in ("GET", "HEAD"):
            with self.lock:
                response = _Response(200, self._rate_limit_body(token))
                response.headers.update(self._rate_headers(token))
            return self._conditional(req, response, token, None)

        with self.lock:
            if token.remaining <= 0:
                response = _error(
                    403,
                    f"API rate limit exceeded for user ID {token.user_id}. If you reach out to "
                    "GitHub Support for help, please include the request ID "
                    f"{req.request_id}.",
                    RATE_DOCS,
                )
                response.headers.update(self._rate_headers(token))
                req.rate_limited, req.rate_limit_reset = "core", token.reset
                return response
            token.remaining -= 1
            window = token.window
            rate_headers = self._rate_headers(token)
            response = self.webhooks.route(req, body, token, ctx.api)
            if response is not None:
                pass
            elif req.method in ("GET", "HEAD"):
                response = self._route(req, query_pairs, ctx, token)
            else:
                response = _not_found()
        response.headers.update(rate_headers)
        return self._conditional(req, response, token, window)

    def _conditional(
        self, req: RequestRecord, response: _Response, token: TokenState, window: int | None
    ) -> _Response:
        """Add an ETag to 200s; answer 304 (refunding the rate limit) on If-None-Match."""
        if response.status != 200 or req.method not in ("GET", "HEAD"):
            return response
        etag = f'W/"{hashlib.sha256(response.raw).hexdigest()}"'
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
        response.headers["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
        if not _etag_matches(req.headers.get("if-none-match"), etag):
            return response
        with self.lock:
            if window is not None and token.window == window:
                token.remaining = min(token.limit, token.remaining + 1)
            headers = {k: v for k, v in response.headers.items() if k != "Link"}
            headers.update(self._rate_headers(token))
        return _Response(304, None, headers)

    def _graphql(
        self, req: RequestRecord, gql: graphql.Prepared, token: TokenState, ctx: render.Ctx
    ) -> _Response:
        """POST /graphql: 400 for an unreadable body; otherwise 200 with data and/or errors.
        Only an executed query is charged (``graphql.COST`` points of the graphql budget)."""
        with self.lock:
            if gql.bad_request:
                response = _error(400, "Problems parsing JSON", GRAPHQL_DOCS)
            elif gql.errors:
                response = _Response(200, {"errors": gql.errors})
            elif token.graphql_remaining < graphql.COST:
                message = f"API rate limit exceeded for user ID {token.user_id}."
                body = {"data": None, "errors": [{"type": "RATE_LIMITED", "message": message}]}
                response = _Response(200, body)
                req.rate_limited, req.rate_limit_reset = "graphql", token.graphql_reset
            else:
                token.graphql_remaining -= graphql.COST
                req.graphql_cost = graphql.COST
                rate = {
                    "cost": graphql.COST,
                    "limit": token.graphql_limit,
                    "remaining": token.graphql_remaining,
                    "used": token.graphql_used,
                    "resetAt": graphql.reset_at(token.graphql_reset),
                }
                viewer = User(login=token.login, id=token.user_id)
                response = _Response(200, graphql.execute(gql, self, ctx, viewer, rate))
            response.headers.update(self._rate_headers(token, "graphql"))
        return response

    def _rate_headers(self, token: TokenState, resource: str = "core") -> dict[str, str]:
        if resource == "graphql":
            return {
                "X-RateLimit-Limit": str(token.graphql_limit),
                "X-RateLimit-Remaining": str(token.graphql_remaining),
                "X-RateLimit-Reset": str(token.graphql_reset),
                "X-RateLimit-Used": str(token.graphql_used),
                "X-RateLimit-Resource": "graphql",
            }
        return {
            "X-RateLimit-Limit": str(token.limit),
            "X-RateLimit-Remaining": str(token.remaining),
            "X-RateLimit-Reset": str(token.reset),
            "X-RateLimit-Used": str(token.used),
            "X-RateLimit-Resource": "core",
        }

    def _rate_limit_body(self, token: TokenState) -> dict[str, Any]:
        now = epoch(self.now())

        def fresh(limit: int, resource: str, window: int = 3600) -> dict[str, Any]:
            return {
                "limit": limit,
                "used": 0,
                "remaining": limit,
                "reset": now + window,
                "resource": resource,
            }

        core = {
            "limit": token.limit,
            "used": token.used,
            "remaining": token.remaining,
            "reset": token.reset,
            "resource": "core",
        }
        return {
            "resources": {
                "core": core,
                "search": fresh(30, "search", 60),
                "graphql": {
                    "limit": token.graphql_limit,
                    "used": token.graphql_used,
                    "remaining": token.graphql_remaining,
                    "reset": token.graphql_reset,
                    "resource": "graphql",
                },
                "integration_manifest": fresh(5000, "integration_manifest"),
                "source_import": fresh(100, "source_import", 60),
                "code_scanning_upload": fresh(1000, "code_scanning_upload"),
                "actions_runner_registration": fresh(10000, "actions_runner_registration"),
                "scim": fresh(15000, "scim"),
                "dependency_snapshots": fresh(100, "dependency_snapshots", 60),
                "code_search": fresh(10, "code_search", 60),
            },
            "rate": dict(core),
        }

    # ------------------------------------------------------------------ routing (lock held)

    def _route(
        self,
        req: RequestRecord,
        query_pairs: list[tuple[str, str]],
        ctx: render.Ctx,
        token: TokenState,
    ) -> _Response:
        name, match = _match_route(req.path)
        if match is None:
            return _not_found()
        if name == "user":
            user = User(login=token.login, id=token.user_id)
            return _Response(200, render.authenticated_user_json(ctx, user))
        repo_state = self.find_repo(match["owner"], match["repo"])
        if repo_state is None:
            return _not_found()
        repo = repo_state.record
        if name == "repo":
            return _Response(200, render.repo_json(ctx, repo))
        if name in ("issue", "pull"):
            item = repo_state.items.get(int(match["number"]))
            if item is None or (name == "pull" and not item.is_pull):
                return _not_found()
            if name == "issue":
                return _Response(200, render.issue_json(ctx, repo, item))
            return _Response(200, render.pull_json(ctx, repo, item, full=True))
        return self._list(req, query_pairs, ctx, repo_state, name)

    def _list(
        self,
        req: RequestRecord,
        query_pairs: list[tuple[str, str]],
        ctx: render.Ctx,
        repo_state: Any,
        kind: str,
    ) -> _Response:
        q = req.query
        resource = "Issue" if kind == "issues" else "PullRequest"
        item_state = q.get("state") or "open"
        if item_state not in ("open", "closed", "all"):
            return _validation_failed(resource, "state")
        sorts = ("created", "updated", "comments")
        if kind == "pulls":
            sorts = ("created", "updated", "popularity", "long-running")
        sort = q.get("sort") or "created"
        if sort not in sorts:
            return _validation_failed(resource, "sort")
        # GitHub: issues default to desc; pulls default to desc only for sort=created.
        default_direction = "desc" if kind == "issues" or sort == "created" else "asc"
        direction = q.get("direction") or default_direction
        if direction not in ("asc", "desc"):
            return _validation_failed(resource, "direction")
        since = None
        if kind == "issues" and q.get("since"):
            try:
                since = parse_iso8601(q["since"])
            except ValueError:
                return _validation_failed(resource, "since")
        per_page = _int_param(q.get("per_page"), DEFAULT_PER_PAGE)
        per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
        page = max(_int_param(q.get("page"), 1), 1)
        if (page - 1) * per_page >= MAX_OFFSET:
            return _error(422, DEEP_PAGE_MESSAGE)

        items = self.sorted_items(repo_state, kind, item_state, sort, direction)
        if since is not None:
            items = [i for i in items if i.updated_at >= since]
        if kind == "pulls" and (q.get("base") or q.get("head")):
            items = _filter_branches(items, repo_state.record.owner, q.get("base"), q.get("head"))
        total = len(items)
        start = (page - 1) * per_page
        window = items[start : start + per_page]
        repo = repo_state.record
        if kind == "issues":
            body = [render.issue_json(ctx, repo, i) for i in window]
        else:
            repo_data = render.repo_json(ctx, repo, full=False)
            body = [render.pull_json(ctx, repo, i, False, repo_data) for i in window]
        response = _Response(200, body)
        link = _link_header(f"{ctx.api}{req.path}", query_pairs, page, per_page, total)
        if link:
            response.headers["Link"] = link
        return response


def _filter_branches(items: list[Any], owner: str, base: str | None, head: str | None) -> list[Any]:
    """GitHub's ``base=<ref>`` and ``head=<user>:<ref>`` filters of GET /pulls."""
    if base:
        items = [i for i in items if i.base_ref == base]
    if head:
        head_owner, _, head_ref = head.rpartition(":")
        if head_owner and head_owner.lower() != owner.lower():
            return []
        items = [i for i in items if i.head_ref == head_ref]
    return items


def _match_route(path: str) -> tuple[str, re.Match[str] | None]:
    for name, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None:
            return name, match
    return "", None


def _int_param(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _link_header(
    base: str, query_pairs: list[tuple[str, str]], page: int, per_page: int, total: int
) -> str | None:
    """GitHub's offset-pagination Link header (prev, next, last, first)."""
    last = max(1, math.ceil(total / per_page))
    if page == 1 and last == 1:
        return None
    others = [(k, v) for k, v in query_pairs if k != "page"]

    def url(n: int) -> str:
        return f"{base}?{urlencode([*others, ('page', str(n))])}"

    parts = []
    if page > 1:
        parts.append(f'<{url(page - 1)}>; rel="prev"')
    if page < last:
        parts.append(f'<{url(page + 1)}>; rel="next"')
        parts.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        parts.append(f'<{url(1)}>; rel="first"')
    return ", ".join(parts)
