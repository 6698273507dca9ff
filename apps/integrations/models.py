from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from apps.integrations.fields import EncryptedSecretField
from apps.teams.models import BaseTeamModel, TeamScopedQuerySet


class TrackedRepositoryQuerySet(TeamScopedQuerySet):
    def syncable(self) -> TrackedRepositoryQuerySet:
        """Repositories a sync may run for: active, with a connected integration.

        The one definition of "can sync", used by the daily fan-out, the sync job and the
        admin's actions.
        """
        return self.filter(is_active=True, integration__credential__isnull=False)

    def named(self, full_name: str) -> TrackedRepositoryQuerySet:
        """Repositories called ``full_name``, ignoring case as GitHub does.

        Compares ``lower(full_name)`` so the expression index below serves it (``iexact``
        compiles to LIKE/UPPER, which no index covers).
        """
        return self.annotate(_lower_name=Lower("full_name")).filter(
            _lower_name=full_name.strip().lower()
        )


class GitHubIntegration(BaseTeamModel):
    """A team's connection to GitHub. Connected while it has a credential."""

    account_login = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team"], name="one_github_integration_per_team"),
        ]

    def __str__(self) -> str:
        return f"{self.team.slug}: GitHub ({self.account_login})"

    @property
    def is_connected(self) -> bool:
        # Asks the database rather than the cached relation: a credential deleted through
        # another object (or another process) must read as disconnected here too.
        return IntegrationCredential.objects.filter(integration_id=self.pk).exists()


class IntegrationCredential(models.Model):
    """The access token of an integration, encrypted at rest.

    Deleting it disconnects the integration and nothing else: the integration, its
    repositories and their pull requests stay (OneToOne cascades only from the other side).
    """

    integration = models.OneToOneField(
        GitHubIntegration, on_delete=models.CASCADE, related_name="credential"
    )
    access_token = EncryptedSecretField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"credential of {self.integration_id}"


class TrackedRepository(BaseTeamModel):
    class SyncStatus(models.TextChoices):
        IDLE = "idle", "Idle"
        QUEUED = "queued", "Queued"
        SYNCING = "syncing", "Syncing"
        RATE_LIMITED = "rate_limited", "Rate limited"
        ERROR = "error", "Error"

    integration = models.ForeignKey(
        GitHubIntegration, on_delete=models.CASCADE, related_name="repositories"
    )
    github_repo_id = models.BigIntegerField()

    objects = TrackedRepositoryQuerySet.as_manager()
    full_name = models.CharField(max_length=255)
    is_active = models.BooleanField(default=True)
    inactive_reason = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Why the repository stopped syncing (e.g. deleted or archived on GitHub).",
    )

    # The repository hook that pushes pull_request and repository events (webhooks app).
    webhook_id = models.BigIntegerField(null=True, blank=True)
    webhook_error = models.TextField(
        blank=True, default="", help_text="Why the hook could not be registered or checked."
    )
    webhook_last_delivery_at = models.DateTimeField(
        null=True, blank=True, help_text="When the receiver last accepted a delivery for it."
    )
    webhook_failed_deliveries = models.IntegerField(
        default=0, help_text="Failed deliveries the last recovery pass found and could not redo."
    )
    webhook_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the recovery job last listed the hook's deliveries."
    )
    webhook_deliveries_cursor = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Newest delivery id the recovery job has already examined.",
    )

    # Outcome of the last sync, written only by services.sync_outcome.
    last_sync_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last successful sync finished (our clock)."
    )
    last_sync_error = models.TextField(blank=True, default="")
    sync_status = models.CharField(
        max_length=16, choices=SyncStatus.choices, default=SyncStatus.IDLE
    )
    # Also written only by services.sync_outcome. The sweep (services/sync_sweep.py) reads
    # them to tell a status that is still true from one nothing will ever change.
    sync_status_changed_at = models.DateTimeField(
        default=timezone.now,
        help_text="When sync_status was last set (for 'queued': when its message was sent).",
    )
    sync_retry_at = models.DateTimeField(
        null=True, blank=True, help_text="While rate limited: when GitHub lets the sync resume."
    )
    sync_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The fan-out asked for a sync then and has not enqueued its message yet.",
    )
    sync_enqueued_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the last requested sync's message was enqueued (fan-out, admin, sweep).",
    )

    # Where the next sync starts. These come from GitHub's own updated_at values, never from
    # our clock: a PR edited while we page carries a GitHub timestamp at or after the
    # watermark, so the next sync sees it (the original design's `last_sync_at = now()`
    # after fetching, docs/original-design.md, would skip edits made during the sync).
    sync_watermark = models.DateTimeField(
        null=True,
        blank=True,
        help_text="GitHub updated_at from which the next incremental sync lists changes.",
    )
    sync_listing_etag = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="ETag of the first incremental listing page at the watermark (304 = no change).",
    )
    sync_checkpoint = models.JSONField(
        null=True,
        blank=True,
        help_text="Position of an unfinished sync pass; the next sync resumes from it.",
    )

    # One sync per repository: a lease on the row (see services/sync_lease.py).
    sync_lease_owner = models.CharField(max_length=64, blank=True, default="")
    # The request (message) the holder is serving: its redelivery must wait for the lease to
    # lapse, not be dropped as "covered by a newer sync".
    sync_lease_request = models.CharField(max_length=64, blank=True, default="")
    sync_lease_taken_at = models.DateTimeField(null=True, blank=True)
    sync_lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "tracked repositories"
        constraints = [
            models.UniqueConstraint(fields=["team", "full_name"], name="unique_repo_per_team"),
        ]
        indexes = [
            # Fan-out and admin filters.
            models.Index(fields=["is_active", "sync_status"], name="trackedrepo_active_status"),
            # sync_repo matches names case-insensitively.
            models.Index(Lower("full_name"), name="trackedrepo_lower_name"),
        ]

    def __str__(self) -> str:
        return self.full_name


class PullRequest(BaseTeamModel):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    tracked_repo = models.ForeignKey(
        TrackedRepository, on_delete=models.CASCADE, related_name="pull_requests"
    )
    github_id = models.BigIntegerField()
    number = models.IntegerField()
    title = models.TextField()
    state = models.CharField(max_length=8, choices=State.choices)
    is_draft = models.BooleanField(default=False)
    author_login = models.CharField(max_length=255)
    github_created_at = models.DateTimeField()
    github_updated_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    additions = models.IntegerField(default=0)
    deletions = models.IntegerField(default=0)
    changed_files = models.IntegerField(default=0)
    commits = models.IntegerField(default=0)
    base_ref = models.CharField(max_length=255, blank=True, default="")
    head_ref = models.CharField(max_length=255, blank=True, default="")
    html_url = models.URLField(max_length=500)

    class Meta:
        constraints = [
            # The upsert's conflict target: the same repository may be tracked by two teams,
            # so uniqueness is per tracked repository, not per GitHub id.
            models.UniqueConstraint(
                fields=["tracked_repo", "github_id"], name="unique_pr_github_id_per_repo"
            ),
            models.UniqueConstraint(
                fields=["tracked_repo", "number"], name="unique_pr_number_per_repo"
            ),
        ]
        indexes = [
            # Analytics read a team's PRs over time windows.
            models.Index(fields=["team", "github_updated_at"], name="pr_team_updated"),
            models.Index(fields=["tracked_repo", "github_created_at"], name="pr_repo_created"),
        ]

    def __str__(self) -> str:
        return f"{self.tracked_repo.full_name}#{self.number}"


class WebhookDelivery(models.Model):
    """One GitHub delivery the receiver accepted, by its ``X-GitHub-Delivery`` GUID: a
    redelivery or replay of it changes nothing. Not team-scoped: one delivery may update
    every team that tracks the repository. Pruned after ``WEBHOOK_DELIVERY_RETENTION_DAYS``.
    """

    guid = models.CharField(max_length=64, unique=True)
    event = models.CharField(max_length=64)
    action = models.CharField(max_length=64, blank=True, default="")
    github_repo_id = models.BigIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=32, blank=True, default="")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} {self.guid}"
