"""The original design's approach (``docs/original-design.md``), run as written.

PyGithub with its defaults (``GithubRetry``, 0.25 s between requests, 30 items per page),
``get_issues(since=...)`` newest first, and for every item ``issue.pull_request`` then
``repo.get_pull(number)``, one after the other. It stores nothing: its figures are a lower
bound for the original design (which would add a per-row ``update_or_create``; see
``original_store``).
"""

from __future__ import annotations

from datetime import datetime

from github import Auth, Github

from apps.integrations.models import PullRequest, TrackedRepository
from apps.integrations.services.pull_requests import PullRequestData


def original_sync(
    *, api_url: str, token: str, full_name: str, since: datetime, throttle: bool = True
) -> int:
    """List what changed since ``since`` and fetch every PR's details; returns PRs read.

    ``throttle=False`` turns off PyGithub's default 0.25 s pause between requests (the memory
    pass does: sleeping allocates nothing); otherwise every PyGithub default applies.
    """
    options = {} if throttle else {"seconds_between_requests": None}
    github = Github(auth=Auth.Token(token), base_url=api_url, **options)
    try:
        repo = github.get_repo(full_name)
        pulls = 0
        for issue in repo.get_issues(state="all", since=since, sort="updated"):
            if issue.pull_request:
                pr = repo.get_pull(issue.number)
                # The detail fields the product stores (what the list items lack).
                _ = (
                    pr.id,
                    pr.title,
                    pr.state,
                    pr.draft,
                    pr.user.login if pr.user else None,
                    pr.created_at,
                    pr.updated_at,
                    pr.closed_at,
                    pr.merged_at,
                    pr.additions,
                    pr.deletions,
                    pr.changed_files,
                    pr.commits,
                    pr.base.ref,
                    pr.head.ref,
                    pr.html_url,
                )
                pulls += 1
        return pulls
    finally:
        github.close()


def original_store(*, tracked_repo: TrackedRepository, pull_requests: list[PullRequestData]) -> int:
    """The original design's write path: one ``update_or_create`` per pull request."""
    for pr in pull_requests:
        PullRequest.objects.update_or_create(
            tracked_repo=tracked_repo,
            github_id=pr.github_id,
            defaults={
                "team_id": tracked_repo.team_id,
                "number": pr.number,
                "title": pr.title,
                "state": pr.state,
                "is_draft": pr.is_draft,
                "author_login": pr.author_login,
                "github_created_at": pr.github_created_at,
                "github_updated_at": pr.github_updated_at,
                "closed_at": pr.closed_at,
                "merged_at": pr.merged_at,
                "additions": pr.additions,
                "deletions": pr.deletions,
                "changed_files": pr.changed_files,
                "commits": pr.commits,
                "base_ref": pr.base_ref,
                "head_ref": pr.head_ref,
                "html_url": pr.html_url,
            },
        )
    return len(pull_requests)
