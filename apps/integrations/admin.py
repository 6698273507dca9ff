from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.forms import ModelForm
from django.http import HttpRequest

from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)

if TYPE_CHECKING:
    from apps.integrations.tasks import EnqueueFailed


class ReadOnlyAdmin(admin.ModelAdmin):
    """Data that comes from GitHub: visible, never edited or deleted by hand.

    A deleted row would not come back with the next incremental sync (that lists only what
    changed on GitHub since), so our copy would silently miss it until the PR is edited.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(GitHubIntegration)
class GitHubIntegrationAdmin(admin.ModelAdmin):
    list_display = ["team", "account_login", "connected", "created_at"]
    search_fields = ["team__slug", "account_login"]
    readonly_fields = ["team", "account_login", "connected", "created_at", "updated_at"]
    fields = readonly_fields

    @admin.display(boolean=True)
    def connected(self, obj: GitHubIntegration) -> bool:
        return obj.is_connected

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Integrations are created by connecting a token (track_repo), which checks it first.
        return False


@admin.register(IntegrationCredential)
class IntegrationCredentialAdmin(admin.ModelAdmin):
    """Credentials can be listed and deleted (which disconnects), never read."""

    list_display = ["integration", "created_at", "updated_at"]
    fields = ["integration", "created_at", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Django accepts a query-string filter on any of the model's own columns. On this one,
        # startswith and regex compare the stored ciphertext with the raw value (only exact-style
        # lookups encrypt it first), so the result count would let a viewer read the ciphertext
        # one character at a time.
        if lookup.split(LOOKUP_SEP, 1)[0] == "access_token":
            return False
        return super().lookup_allowed(lookup, value, request)


@admin.register(TrackedRepository)
class TrackedRepositoryAdmin(admin.ModelAdmin):
    list_display = [
        "full_name",
        "team",
        "is_active",
        "inactive_reason",
        "sync_status",
        "last_sync_at",
        "short_error",
        "webhook",
        "webhook_last_delivery_at",
    ]
    list_filter = ["sync_status", "is_active", "team"]
    search_fields = ["full_name", "team__slug"]
    list_select_related = ["team"]
    readonly_fields = [
        "team",
        "integration",
        "github_repo_id",
        "full_name",
        "inactive_reason",
        "webhook_id",
        "webhook",
        "webhook_error",
        "webhook_last_delivery_at",
        "webhook_failed_deliveries",
        "webhook_checked_at",
        "sync_status",
        "sync_status_changed_at",
        "last_sync_at",
        "last_sync_error",
        "sync_watermark",
        "sync_checkpoint",
        "created_at",
        "updated_at",
    ]
    fields = ["is_active", *readonly_fields]
    actions = ["sync_now", "full_resync", "register_webhooks"]

    @admin.action(description="Sync selected repositories now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[TrackedRepository]) -> None:
        self._enqueue(request, queryset, full=False)

    @admin.action(
        description="Full resync of selected repositories (whole window)", permissions=["change"]
    )
    def full_resync(self, request: HttpRequest, queryset: QuerySet[TrackedRepository]) -> None:
        self._enqueue(request, queryset, full=True)

    def _enqueue(
        self, request: HttpRequest, queryset: QuerySet[TrackedRepository], *, full: bool
    ) -> None:
        from apps.integrations.tasks import EnqueueFailed, enqueue_repository_syncs

        selected = list(queryset.values_list("pk", flat=True))
        try:
            # An operator is waiting: ahead of the daily fan-out, and allowed the reserve.
            count = enqueue_repository_syncs(tracked_repo_ids=selected, full=full, interactive=True)
        except EnqueueFailed as failure:
            self.message_user(request, _queue_down_message(failure), messages.ERROR)
            return
        kind = "full resync" if full else "sync"
        noun = "repository" if count == 1 else "repositories"
        self.message_user(request, f"Queued a {kind} of {count} {noun}.", messages.SUCCESS)
        if skipped := len(selected) - count:
            noun = "repository is" if skipped == 1 else "repositories are"
            self.message_user(
                request,
                f"Skipped {skipped}: the {noun} inactive or the team's GitHub integration is "
                "disconnected (reconnect it with manage.py track_repo).",
                messages.WARNING,
            )

    def save_model(
        self, request: HttpRequest, obj: TrackedRepository, form: ModelForm, change: bool
    ) -> None:
        # Syncs write this row (status, watermark, checkpoint, lease) at any time; saving every
        # column would put back what was read at the start of this request and undo a sync's
        # write committed in between.
        changed = list(form.changed_data)
        if "is_active" in changed and obj.is_active and obj.inactive_reason:
            # Reactivated by hand: the reason it was inactive (archived on GitHub) is past.
            obj.inactive_reason = ""
            changed.append("inactive_reason")
        if changed:
            obj.save(update_fields=[*changed, "updated_at"])
        if "is_active" in form.changed_data and not obj.is_active:
            self._unregister_webhooks(request, [obj])

    @admin.action(description="Register webhooks (create or repair)", permissions=["change"])
    def register_webhooks(
        self, request: HttpRequest, queryset: QuerySet[TrackedRepository]
    ) -> None:
        from apps.integrations.services.github_client import GitHubError
        from apps.integrations.services.tracking import InvalidInput
        from apps.integrations.services.webhook_registration import (
            current_webhook_secret,
            validate_webhook_url,
            webhook_register,
        )

        try:
            url = validate_webhook_url(settings.GITHUB_WEBHOOK_URL)
            current_webhook_secret()
        except InvalidInput as problem:
            self.message_user(request, f"Nothing registered: {problem}", messages.ERROR)
            return
        repos = list(queryset.select_related("integration", "team").order_by("pk"))
        registered = 0
        for repo in repos:
            if not repo.is_active:
                self.message_user(
                    request,
                    f"{repo.full_name}: skipped, the repository is inactive.",
                    messages.WARNING,
                )
                continue
            try:
                webhook_register(tracked_repo=repo, url=url)
            except GitHubError as error:
                self.message_user(request, f"{repo.full_name}: {error}", messages.ERROR)
                continue
            registered += 1
        if registered:
            noun = "repository" if registered == 1 else "repositories"
            self.message_user(
                request, f"Registered the webhook of {registered} {noun}.", messages.SUCCESS
            )

    def delete_model(self, request: HttpRequest, obj: TrackedRepository) -> None:
        self._unregister_webhooks(request, [obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TrackedRepository]) -> None:
        repos = list(queryset.select_related("integration", "team"))
        # Inactive first: a hook the selected rows share with one another (two teams tracking
        # one repository) is then deleted, not kept for a row about to go too.
        queryset.update(is_active=False)
        self._unregister_webhooks(request, repos)
        super().delete_queryset(request, queryset)

    def _unregister_webhooks(self, request: HttpRequest, repos: list[TrackedRepository]) -> None:
        """An untracked repository's hook goes too, best effort: a failure is shown and
        recorded, and never stops the untracking."""
        from apps.integrations.services.webhook_registration import webhook_unregister

        for repo in repos:
            if not webhook_unregister(tracked_repo=repo):
                self.message_user(
                    request,
                    f"{repo.full_name}: the webhook could not be deleted on GitHub "
                    f"({repo.webhook_error}); delete it in the repository's settings.",
                    messages.WARNING,
                )

    @admin.display(description="webhook")
    def webhook(self, obj: TrackedRepository) -> str:
        from apps.integrations.services.webhook_registration import webhook_state

        return webhook_state(obj)

    @admin.display(description="last error")
    def short_error(self, obj: TrackedRepository) -> str:
        error = obj.last_sync_error
        return error if len(error) <= 80 else error[:79] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def _queue_down_message(failure: EnqueueFailed) -> str:
    if not failure.enqueued:
        return "Could not reach the task queue (Redis); nothing was queued."
    return (
        f"Could not reach the task queue (Redis) after queueing {failure.enqueued} of "
        f"{failure.total} repositories; the others were not queued."
    )


@admin.register(PullRequest)
class PullRequestAdmin(ReadOnlyAdmin):
    list_display = ["tracked_repo", "number", "title", "state", "author_login", "github_updated_at"]
    list_filter = ["state", "is_draft"]
    search_fields = ["title", "author_login", "tracked_repo__full_name", "=number"]
    list_select_related = ["tracked_repo"]
    date_hierarchy = "github_updated_at"
    show_full_result_count = False
