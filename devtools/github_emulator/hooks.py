"""Repository webhooks of the GitHub emulator: the hooks API, signed deliveries, the
deliveries log and redelivery.

GitHub's behaviour reproduced here (docs: "REST API endpoints for repository webhooks",
"Handling failed webhook deliveries"):

- ``POST/GET/PATCH/DELETE /repos/{o}/{r}/hooks[/{id}]``; the secret is never shown (the
  config says ``"********"``); a second hook with the same URL is refused with 422.
- A token can lack the hook permission (``deny_hook_permission``): a classic token without
  ``admin:repo_hook`` gets 404 "Not Found" (GitHub hides what it will not show), a
  fine-grained one without "Webhooks" gets 403 "Resource not accessible by personal access
  token".
- When a pull request is added or changed, or the repository renamed, each active hook
  subscribed to the event gets a ``pull_request`` / ``repository`` delivery: a POST from a
  background thread (never inside the request or call that changed the data), signed with
  ``X-Hub-Signature-256`` over the exact body, 10 s timeout. Every attempt is recorded ("OK"
  for a 2xx, else why) and listed newest first by
  ``GET .../hooks/{id}/deliveries`` with cursor paging (``Link: rel="next"``). GitHub keeps
  three days of them and retries none by itself;
  ``POST .../deliveries/{id}/attempts`` (202) sends the same GUID again as a redelivery.
- All of these count against the token's rate limit like any REST call.

Test controls (on ``emulator.webhooks``): ``set_deliveries_enabled(False)`` (the receiver is
down: attempts fail with "failed to connect"), ``delete_hook`` / ``alter_hook`` (someone
changes the hook on GitHub), ``wait_idle()`` (every queued delivery attempted).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from . import render
from .store import iso

if TYPE_CHECKING:
    from .server import GitHubEmulator, RequestRecord, _Response
    from .store import ItemRecord, TokenState, _RepoState

HOOKS_DOCS = "https://docs.github.com/rest/repos/webhooks"
DELIVERY_TIMEOUT = 10.0  # seconds: GitHub's limit for a receiver's answer
DELIVERY_WINDOW = timedelta(days=3)  # what GitHub lists and will redeliver
SECRET_MASK = "********"  # noqa: S105 - what GitHub shows instead
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30
USER_AGENT = "GitHub-Hookshot/emulator"
CLASSIC_HOOK_SCOPES = "admin:repo_hook, read:repo_hook, repo, write:repo_hook"
FINE_GRAINED_DENIED = "Resource not accessible by personal access token"

_HOOK_FIELDS = frozenset({"url", "content_type", "secret", "insecure_ssl", "events", "active"})
_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}
_HOOKS_PATH = re.compile(
    r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/hooks"
    r"(?:/(?P<hook_id>\d+)(?:/(?P<rest>deliveries(?:/(?P<delivery_id>\d+)(?:/attempts)?)?))?)?"
)


@dataclass(slots=True)
class Hook:
    id: int
    repo_id: int
    url: str
    content_type: str
    secret: str
    insecure_ssl: str
    events: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Delivery:
    """One attempt to deliver an event to a hook (a redelivery is another attempt, same GUID)."""

    guid: str
    hook_id: int
    repo_id: int
    event: str
    action: str | None
    body: bytes
    redelivery: bool = False
    delivered_at: datetime | None = None  # None: queued, not attempted yet
    status: str = "pending"
    status_code: int = 0
    duration: float = 0.0
    request_headers: dict[str, str] = field(default_factory=dict)
    # Given when attempted: GitHub's log holds attempts, and its ids grow with their time.
    id: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "OK"


class Webhooks:
    """The webhook side of one emulator. State is guarded by the emulator's lock."""

    def __init__(self, emulator: GitHubEmulator) -> None:
        self._emu = emulator
        self._hooks: dict[int, Hook] = {}  # by hook id
        self._deliveries: list[Delivery] = []  # in id order
        self._hook_ids = itertools.count(488_000_001)
        self._delivery_ids = itertools.count(12_000_000_001)
        self._denied: dict[str, str] = {}  # token -> "classic" | "fine_grained"
        self._enabled = True
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ test controls

    def deny_hook_permission(self, token: str, kind: str = "classic") -> None:
        """Make ``token`` lack the hook permission: ``"classic"`` (no ``admin:repo_hook``:
        404) or ``"fine_grained"`` (no "Webhooks" permission: 403)."""
        if kind not in ("classic", "fine_grained"):
            raise ValueError("kind is 'classic' or 'fine_grained'")
        with self._emu.lock:
            self._denied[token] = kind

    def allow_hook_permission(self, token: str) -> None:
        with self._emu.lock:
            self._denied.pop(token, None)

    def set_deliveries_enabled(self, enabled: bool) -> None:
        """``False``: the receiver is unreachable; attempts fail with "failed to connect"."""
        with self._emu.lock:
            self._enabled = enabled

    def hooks(self, repo: str) -> list[Hook]:
        """Copies of the repository's hooks, by id."""
        with self._emu.lock:
            repo_id = self._emu.get_repo(repo).id
            return [_copy(h) for h in self._hooks.values() if h.repo_id == repo_id]

    def delete_hook(self, repo: str, hook_id: int) -> None:
        """Someone deletes the hook on GitHub, behind the product's back."""
        with self._emu.lock:
            hook = self._hook_of(repo, hook_id)
            del self._hooks[hook.id]

    def alter_hook(self, repo: str, hook_id: int, **changes: Any) -> Hook:
        """Someone edits the hook on GitHub: any of url, content_type, secret, insecure_ssl,
        events, active."""
        with self._emu.lock:
            hook = self._hook_of(repo, hook_id)
            for name, value in changes.items():
                if name not in _HOOK_FIELDS:
                    raise TypeError(f"unknown hook field {name!r}")
                setattr(hook, name, list(value) if name == "events" else value)
            hook.updated_at = self._emu.now()
            return _copy(hook)

    def deliveries(self, repo: str | None = None) -> list[Delivery]:
        """Copies of every delivery attempt (of ``repo``'s hooks), oldest first."""
        with self._emu.lock:
            repo_id = self._emu.get_repo(repo).id if repo is not None else None
            return [_copy(d) for d in self._deliveries if repo_id is None or d.repo_id == repo_id]

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Return once every delivery queued so far has been attempted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._emu.lock:
                if self._queue.unfinished_tasks == 0:
                    return
            time.sleep(0.01)
        raise TimeoutError(f"webhook deliveries still pending after {timeout}s")

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=DELIVERY_TIMEOUT + 5)

    # ------------------------------------------------------------------ events (lock held)

    def pull_request_changed(
        self, repo_state: _RepoState, item: ItemRecord, action: str, sender: str | None
    ) -> None:
        if not item.is_pull or not self._subscribed(repo_state.record.id, "pull_request"):
            return
        ctx = self._ctx()
        repo = repo_state.record
        payload = {
            "action": action,
            "number": item.number,
            "pull_request": render.pull_json(ctx, repo, item, full=True),
            "repository": render.repo_json(ctx, repo),
            "sender": render.login_json(ctx, sender),
        }
        self._emit(repo.id, "pull_request", action, payload)

    def repository_renamed(self, repo_state: _RepoState, old_name: str) -> None:
        repo = repo_state.record
        if not self._subscribed(repo.id, "repository"):
            return
        ctx = self._ctx()
        payload = {
            "action": "renamed",
            "changes": {"repository": {"name": {"from": old_name}}},
            "repository": render.repo_json(ctx, repo),
            "sender": render.login_json(ctx, repo.owner),
        }
        self._emit(repo.id, "repository", "renamed", payload)

    def _subscribed(self, repo_id: int, event: str) -> bool:
        return any(
            h.repo_id == repo_id and h.active and (event in h.events or "*" in h.events)
            for h in self._hooks.values()
        )

    def _ctx(self) -> render.Ctx:
        emu = self._emu
        base = emu.url if emu._server is not None else f"http://{emu.host}"
        return render.Ctx(api=base + emu.prefix, html=base, store=emu)

    def _emit(self, repo_id: int, event: str, action: str | None, payload: dict) -> None:
        # One GUID per event, shared by every hook it goes to (as on GitHub).
        guid = str(uuid.uuid4())
        body = json.dumps(payload, separators=(",", ":")).encode()
        for hook in list(self._hooks.values()):
            if hook.repo_id != repo_id or not hook.active:
                continue
            if event not in hook.events and "*" not in hook.events:
                continue
            self._enqueue(
                Delivery(
                    guid=guid,
                    hook_id=hook.id,
                    repo_id=repo_id,
                    event=event,
                    action=action,
                    body=body,
                )
            )

    def _enqueue(self, delivery: Delivery) -> None:
        self._queue.put(delivery)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._deliver_forever, name="github-emulator-webhooks", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ delivery thread

    def _deliver_forever(self) -> None:
        while True:
            delivery = self._queue.get()
            try:
                if delivery is None:
                    return
                self._deliver(delivery)
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: Delivery) -> None:
        with self._emu.lock:
            hook = self._hooks.get(delivery.hook_id)
            enabled = self._enabled
            url = hook.url if hook else ""
            secret = hook.secret if hook else ""
            content_type = hook.content_type if hook else "json"
        body = delivery.body
        if content_type == "form":
            body = urlencode({"payload": body.decode()}).encode()
        headers = {
            "Accept": "*/*",
            "Content-Type": _CONTENT_TYPES.get(content_type, _CONTENT_TYPES["form"]),
            "User-Agent": USER_AGENT,
            "X-GitHub-Delivery": delivery.guid,
            "X-GitHub-Event": delivery.event,
            "X-GitHub-Hook-ID": str(delivery.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(delivery.repo_id),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
        }
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = f"sha256={digest}"
            legacy = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature"] = f"sha1={legacy}"
        started = time.monotonic()
        if hook is None:
            status, code = "hook deleted", 0
        elif not enabled:
            status, code = "failed to connect to host", 0
        else:
            status, code = _post(url, body, headers)
        with self._emu.lock:
            delivery.id = next(self._delivery_ids)
            self._deliveries.append(delivery)
            delivery.delivered_at = self._emu.now()
            delivery.duration = round(time.monotonic() - started, 3)
            delivery.status, delivery.status_code = status, code
            delivery.request_headers = headers

    # ------------------------------------------------------------------ REST (lock held)

    def route(
        self, req: RequestRecord, body: bytes, token: TokenState, api: str
    ) -> _Response | None:
        """The answer to a hooks request, or None when the path is not one of ours."""
        from .server import _error, _not_found, _Response, _validation_failed

        match = _HOOKS_PATH.fullmatch(req.path)
        if match is None:
            return None
        repo_state = self._emu.find_repo(match["owner"], match["repo"])
        if repo_state is None:
            return _not_found()
        denied = self._denied.get(token.token)
        if denied == "classic":
            response = _not_found()
            response.headers["X-Accepted-OAuth-Scopes"] = CLASSIC_HOOK_SCOPES
            response.headers["X-OAuth-Scopes"] = "public_repo"
            return response
        if denied == "fine_grained":
            return _error(403, FINE_GRAINED_DENIED, HOOKS_DOCS)
        repo = repo_state.record
        repo_api = f"{api}/repos/{repo.full_name}"
        method = req.method
        if match["hook_id"] is None:
            if method == "GET":
                hooks = [h for h in self._hooks.values() if h.repo_id == repo.id]
                return _Response(200, [_hook_json(h, repo_api) for h in hooks])
            if method == "POST":
                return self._create(repo.id, repo_api, body)
            return _not_found()
        hook = self._hooks.get(int(match["hook_id"]))
        if hook is None or hook.repo_id != repo.id:
            return _not_found()
        if match["rest"] is None:
            if method == "GET":
                return _Response(200, _hook_json(hook, repo_api))
            if method == "PATCH":
                return self._update(hook, repo_api, body)
            if method == "DELETE":
                del self._hooks[hook.id]
                return _Response(204)
            return _not_found()
        if match["delivery_id"] is None:
            if method != "GET":
                return _not_found()
            return self._list_deliveries(hook, repo_api, req.query)
        delivery = next(
            (
                d
                for d in self._deliveries
                if d.id == int(match["delivery_id"]) and d.hook_id == hook.id
            ),
            None,
        )
        if delivery is None or delivery.delivered_at is None:
            return _not_found()
        if match["rest"].endswith("/attempts"):
            if method != "POST":
                return _not_found()
            if delivery.delivered_at < self._emu.now() - DELIVERY_WINDOW:
                return _validation_failed("HookDelivery", "delivered_at")
            self._enqueue(
                Delivery(
                    guid=delivery.guid,
                    hook_id=hook.id,
                    repo_id=delivery.repo_id,
                    event=delivery.event,
                    action=delivery.action,
                    body=delivery.body,
                    redelivery=True,
                )
            )
            return _Response(202, {})
        if method != "GET":
            return _not_found()
        data = _delivery_json(delivery)
        data["request"] = {
            "headers": dict(delivery.request_headers),
            "payload": json.loads(delivery.body),
        }
        data["response"] = {"headers": {}, "payload": None}
        return _Response(200, data)

    def _create(self, repo_id: int, repo_api: str, body: bytes) -> _Response:
        from .server import _Response, _validation_failed

        data = _json_object(body)
        config = data.get("config") if data else None
        if not isinstance(config, dict) or not isinstance(config.get("url"), str):
            return _validation_failed("Hook", "config")
        events = data.get("events", ["push"])
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            return _validation_failed("Hook", "events")
        if any(h.repo_id == repo_id and h.url == config["url"] for h in self._hooks.values()):
            return _hook_exists()
        now = self._emu.now()
        hook = Hook(
            id=next(self._hook_ids),
            repo_id=repo_id,
            url=config["url"],
            content_type=str(config.get("content_type") or "form"),
            secret=str(config.get("secret") or ""),
            insecure_ssl=str(config.get("insecure_ssl", "0")),
            events=list(events),
            active=bool(data.get("active", True)),
            created_at=now,
            updated_at=now,
        )
        self._hooks[hook.id] = hook
        return _Response(201, _hook_json(hook, repo_api))

    def _update(self, hook: Hook, repo_api: str, body: bytes) -> _Response:
        from .server import _Response, _validation_failed

        data = _json_object(body)
        if data is None:
            return _validation_failed("Hook", "body")
        if "config" in data:
            config = data["config"]
            if not isinstance(config, dict) or not isinstance(config.get("url"), str):
                return _validation_failed("Hook", "config")
            if any(
                h.repo_id == hook.repo_id and h.url == config["url"] and h.id != hook.id
                for h in self._hooks.values()
            ):
                return _hook_exists()
            # GitHub replaces the whole config: a secret left out is removed.
            hook.url = config["url"]
            hook.content_type = str(config.get("content_type") or "form")
            hook.secret = str(config.get("secret") or "")
            hook.insecure_ssl = str(config.get("insecure_ssl", "0"))
        events = list(data.get("events", hook.events))
        events += [e for e in data.get("add_events", []) if e not in events]
        events = [e for e in events if e not in data.get("remove_events", [])]
        hook.events = events
        if "active" in data:
            hook.active = bool(data["active"])
        hook.updated_at = self._emu.now()
        return _Response(200, _hook_json(hook, repo_api))

    def _list_deliveries(self, hook: Hook, repo_api: str, query: dict[str, str]) -> _Response:
        from .server import _Response, _validation_failed

        try:
            per_page = int(query.get("per_page") or DEFAULT_PER_PAGE)
        except ValueError:
            return _validation_failed("HookDelivery", "per_page")
        per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
        cursor = query.get("cursor") or ""
        before: int | None = None
        if cursor:
            if not cursor.startswith("v1_") or not cursor[3:].isdigit():
                return _validation_failed("HookDelivery", "cursor")
            before = int(cursor[3:])
        oldest = self._emu.now() - DELIVERY_WINDOW
        listed = [
            d
            for d in reversed(self._deliveries)
            if d.hook_id == hook.id
            and d.delivered_at is not None
            and d.delivered_at >= oldest
            and (before is None or d.id <= before)
        ]
        page, rest = listed[:per_page], listed[per_page:]
        response = _Response(200, [_delivery_json(d) for d in page])
        if rest:
            params = urlencode({"per_page": per_page, "cursor": f"v1_{rest[0].id}"})
            next_url = f"{repo_api}/hooks/{hook.id}/deliveries?{params}"
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response

    def _hook_of(self, repo: str, hook_id: int) -> Hook:
        repo_id = self._emu.get_repo(repo).id
        hook = self._hooks.get(hook_id)
        if hook is None or hook.repo_id != repo_id:
            raise KeyError(f"{repo} has no hook {hook_id}")
        return hook


def _hook_exists() -> _Response:
    from .server import _error

    message = "Hook already exists on this repository"
    errors = [{"resource": "Hook", "code": "custom", "message": message}]
    return _error(422, "Validation Failed", HOOKS_DOCS, errors=errors)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _hook_json(hook: Hook, repo_api: str) -> dict[str, Any]:
    url = f"{repo_api}/hooks/{hook.id}"
    config: dict[str, Any] = {
        "content_type": hook.content_type,
        "insecure_ssl": hook.insecure_ssl,
        "url": hook.url,
    }
    if hook.secret:
        config["secret"] = SECRET_MASK
    return {
        "type": "Repository",
        "id": hook.id,
        "name": "web",
        "active": hook.active,
        "events": list(hook.events),
        "config": config,
        "updated_at": iso(hook.updated_at),
        "created_at": iso(hook.created_at),
        "url": url,
        "test_url": f"{url}/test",
        "ping_url": f"{url}/pings",
        "deliveries_url": f"{url}/deliveries",
        "last_response": {"code": None, "status": "unused", "message": None},
    }


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "guid": delivery.guid,
        "delivered_at": iso(delivery.delivered_at),
        "redelivery": delivery.redelivery,
        "duration": delivery.duration,
        "status": delivery.status,
        "status_code": delivery.status_code,
        "event": delivery.event,
        "action": delivery.action,
        "installation_id": None,
        "repository_id": delivery.repo_id,
        "throttled_at": None,
    }


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int]:
    """POST one delivery; GitHub's way of describing the outcome: "OK" for a 2xx."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "invalid url", 0
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=DELIVERY_TIMEOUT)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    except TimeoutError:
        return "timed out", 0
    except ConnectionRefusedError:
        return "failed to connect to host", 0
    except (OSError, http.client.HTTPException) as exc:
        return f"delivery failed: {type(exc).__name__}", 0
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return "OK", response.status
    return f"Invalid HTTP Response: {response.status}", response.status


def _copy(value: Any) -> Any:
    import copy

    return copy.copy(value)
