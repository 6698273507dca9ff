"""One sync per repository: a lease on the repository's row.

The rule, in one place:

- A sync runs only while it holds its repository's lease: a row-level claim with an expiry
  (``SYNC_LEASE_SECONDS``, 90 s by default), renewed as the sync works. A worker killed
  mid-sync stops renewing, so its lease lapses within that time and the redelivered message
  resumes from the checkpoint.
- A message that finds a live lease **taken after the message was enqueued** is dropped: the
  running sync started later than the request, so it will list every change the message
  wanted. One that finds an **older** live lease waits until that lease ends (the task layer
  re-enqueues it with a delay): the running sync may have listed past changes made after the
  request. So five messages for one repository cost the API calls of one sync.

The claim is a single conditional UPDATE, so two workers (or a worker and the CLI) cannot
both win it, on SQLite and PostgreSQL alike, without a separate lock service.

The lease is also a fence. A worker can stall past its lease (a GC pause, SIGSTOP, a VM
stall) while another sync takes over, and then resume mid-sync. So every write of a sync runs
in a transaction that first confirms, with a conditional UPDATE on the owner (``fence()``),
that this sync still holds the lease; if not, the transaction rolls back with ``LeaseLost``
and nothing of the stalled sync lands. The UPDATE also locks the row until commit, so a
takeover cannot slip in between the check and the write.

Owners are ``host/namespace:pid:random``. Whether a holder's process is gone is only judged
when it ran in this very process namespace (same kernel boot, same PID namespace): containers
that share a hostname have separate PID spaces, where a PID means nothing to us.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.integrations.models import TrackedRepository

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another sync took the lease (ours lapsed); this sync must stop writing."""


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    taken_at: datetime
    expires_at: datetime
    request_id: str = ""


class Lease:
    """A held lease. ``renew()`` as work progresses; ``release()`` when done."""

    # Renewing on every request would be a write per GitHub call; a third of the lease keeps
    # a safe margin for one slow request between renewals.
    RENEW_FRACTION = 3

    def __init__(self, tracked_repo_id: int, owner: str, duration: timedelta) -> None:
        self.tracked_repo_id = tracked_repo_id
        self.owner = owner
        self.duration = duration
        self._renewed_at = timezone.now()

    def renew(self, *, force: bool = False) -> None:
        """Extend the lease (at most every third of its duration unless ``force``); raises
        ``LeaseLost`` if another sync has taken it."""
        now = timezone.now()
        if not force and now - self._renewed_at < self.duration / self.RENEW_FRACTION:
            return
        updated = TrackedRepository.objects.filter(
            pk=self.tracked_repo_id, sync_lease_owner=self.owner
        ).update(sync_lease_expires_at=now + self.duration)
        if not updated:
            raise LeaseLost(f"the sync lease of repository {self.tracked_repo_id} was lost")
        self._renewed_at = now

    def fence(self) -> None:
        """Confirm, inside the caller's transaction, that this sync still holds the lease (and
        extend it); raises ``LeaseLost`` otherwise, which rolls the transaction back."""
        if not transaction.get_connection().in_atomic_block:
            raise RuntimeError("Lease.fence() must run inside the write's transaction")
        self.renew(force=True)

    def release(self) -> None:
        TrackedRepository.objects.filter(
            pk=self.tracked_repo_id, sync_lease_owner=self.owner
        ).update(
            sync_lease_owner="",
            sync_lease_request="",
            sync_lease_taken_at=None,
            sync_lease_expires_at=None,
        )


def process_namespace() -> str:
    """Twelve hex digits naming this kernel boot and PID namespace: two processes share it
    exactly when a PID of one means the same process to the other. ``SYNC_HOST_ID`` overrides
    it (tests use that to make two workers on one machine look like two machines)."""
    override = os.environ.get("SYNC_HOST_ID", "").strip()
    if override:
        return override[:12]
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: no namespaces to tell apart, the host name stands in
        boot, namespace = socket.gethostname(), ""
    return hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:12]


def new_owner_id() -> str:
    """``host/namespace:pid:random``: unique per sync, and says which process holds it."""
    host = socket.gethostname()[:24]
    return f"{host}/{process_namespace()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _holder_process_is_gone(owner: str) -> bool:
    """True when the owner is a process of our own PID namespace that no longer exists (a
    SIGKILLed CLI run or worker): its lease can be taken at once instead of waiting for it to
    lapse. Anywhere else a PID proves nothing, and only expiry frees the lease."""
    where, _, rest = owner.partition(":")
    namespace = where.rpartition("/")[2]
    pid_text = rest.partition(":")[0]
    if namespace != process_namespace() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lease_free(now: datetime) -> Q:
    """Rows whose lease no sync holds at ``now``: never taken, released, or lapsed."""
    return Q(sync_lease_expires_at__isnull=True) | Q(sync_lease_expires_at__lte=now)


def lease_acquire(
    *, tracked_repo: TrackedRepository, owner: str | None = None, request_id: str = ""
) -> Lease | None:
    """Take the repository's lease for the request ``request_id`` if it is free, lapsed, or
    held by a process of our PID namespace that has died; None if a live one is held."""
    owner = owner or new_owner_id()
    duration = timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    now = timezone.now()
    claim = {
        "sync_lease_owner": owner,
        "sync_lease_request": request_id[:64],
        "sync_lease_taken_at": now,
        "sync_lease_expires_at": now + duration,
    }
    rows = TrackedRepository.objects.filter(pk=tracked_repo.pk)
    taken = rows.filter(lease_free(now)).update(**claim)
    if not taken:
        holder = lease_holder(tracked_repo=tracked_repo)
        if holder is not None and _holder_process_is_gone(holder.owner):
            # Conditional on the same owner, so two processes cannot both take it over.
            taken = rows.filter(sync_lease_owner=holder.owner).update(**claim)
            if taken:
                logger.info(
                    "repo_sync.lease_taken_over",
                    extra={"repo_id": tracked_repo.pk, "from": holder.owner},
                )
    if not taken:
        return None
    logger.debug("repo_sync.lease_taken", extra={"repo_id": tracked_repo.pk, "owner": owner})
    return Lease(tracked_repo.pk, owner, duration)


def lease_holder(*, tracked_repo: TrackedRepository) -> LeaseHolder | None:
    """The live lease on the repository, if any."""
    row = (
        TrackedRepository.objects.filter(
            pk=tracked_repo.pk, sync_lease_expires_at__gt=timezone.now()
        )
        .values_list(
            "sync_lease_owner",
            "sync_lease_taken_at",
            "sync_lease_expires_at",
            "sync_lease_request",
        )
        .first()
    )
    return LeaseHolder(*row) if row else None
