"""JSON renderers producing GitHub REST API (v3) shaped payloads.

All URLs are built from ``Ctx.api`` (scheme + request Host + prefix) so that PyGithub, which
checks that followed URLs match its base_url, accepts them.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

from .store import GHOST_ID, GHOST_LOGIN, ItemRecord, RepoRecord, Store, User, iso

DOCS = "https://docs.github.com/rest"


@dataclass(slots=True)
class Ctx:
    api: str  # e.g. "http://127.0.0.1:1234/api/v3"
    html: str  # e.g. "http://127.0.0.1:1234"
    store: Store


def node_id(type_name: str, id_: int) -> str:
    """GitHub's legacy global node id: base64("0<len>:<Type><id>")."""
    return base64.b64encode(f"0{len(type_name)}:{type_name}{id_}".encode()).decode()


def user_json(ctx: Ctx, user: User) -> dict[str, Any]:
    api_user = f"{ctx.api}/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": node_id(user.type, user.id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
        "gravatar_id": "",
        "url": api_user,
        "html_url": f"{ctx.html}/{user.login}",
        "followers_url": f"{api_user}/followers",
        "following_url": f"{api_user}/following{{/other_user}}",
        "gists_url": f"{api_user}/gists{{/gist_id}}",
        "starred_url": f"{api_user}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api_user}/subscriptions",
        "organizations_url": f"{api_user}/orgs",
        "repos_url": f"{api_user}/repos",
        "events_url": f"{api_user}/events{{/privacy}}",
        "received_events_url": f"{api_user}/received_events",
        "type": user.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def login_json(ctx: Ctx, login: str | None) -> dict[str, Any]:
    if login is None or login.lower() == GHOST_LOGIN:
        return user_json(ctx, User(login=GHOST_LOGIN, id=GHOST_ID))
    return user_json(ctx, ctx.store.user_for(login))


def authenticated_user_json(ctx: Ctx, user: User) -> dict[str, Any]:
    data = user_json(ctx, user)
    data.update(
        {
            "name": user.login.title(),
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "public_repos": 0,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2011-01-25T18:44:36Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
    )
    return data


_REPO_TEMPLATES = {
    "forks_url": "/forks",
    "keys_url": "/keys{/key_id}",
    "collaborators_url": "/collaborators{/collaborator}",
    "teams_url": "/teams",
    "hooks_url": "/hooks",
    "issue_events_url": "/issues/events{/number}",
    "events_url": "/events",
    "assignees_url": "/assignees{/user}",
    "branches_url": "/branches{/branch}",
    "tags_url": "/tags",
    "blobs_url": "/git/blobs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "trees_url": "/git/trees{/sha}",
    "statuses_url": "/statuses/{sha}",
    "languages_url": "/languages",
    "stargazers_url": "/stargazers",
    "contributors_url": "/contributors",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "commits_url": "/commits{/sha}",
    "git_commits_url": "/git/commits{/sha}",
    "comments_url": "/comments{/number}",
    "issue_comment_url": "/issues/comments{/number}",
    "contents_url": "/contents/{+path}",
    "compare_url": "/compare/{base}...{head}",
    "merges_url": "/merges",
    "archive_url": "/{archive_format}{/ref}",
    "downloads_url": "/downloads",
    "issues_url": "/issues{/number}",
    "pulls_url": "/pulls{/number}",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "labels_url": "/labels{/name}",
    "releases_url": "/releases{/id}",
    "deployments_url": "/deployments",
}


def repo_json(ctx: Ctx, repo: RepoRecord, full: bool = True) -> dict[str, Any]:
    url = f"{ctx.api}/repos/{repo.full_name}"
    host = ctx.html.split("://", 1)[-1]
    data: dict[str, Any] = {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": login_json(ctx, repo.owner),
        "html_url": f"{ctx.html}/{repo.full_name}",
        "description": repo.description,
        "fork": False,
        "url": url,
    }
    data.update({k: url + suffix for k, suffix in _REPO_TEMPLATES.items()})
    data.update(
        {
            "created_at": iso(repo.created_at),
            "updated_at": iso(repo.updated_at),
            "pushed_at": iso(repo.updated_at),
            "git_url": f"git://{host}/{repo.full_name}.git",
            "ssh_url": f"git@{host.split(':')[0]}:{repo.full_name}.git",
            "clone_url": f"{ctx.html}/{repo.full_name}.git",
            "svn_url": f"{ctx.html}/{repo.full_name}",
            "homepage": None,
            "size": 1024,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": "Python",
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": 0,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "private" if repo.private else "public",
            "forks": 0,
            "open_issues": 0,
            "watchers": 0,
            "default_branch": repo.default_branch,
        }
    )
    if full:
        data["permissions"] = {
            "admin": False,
            "maintain": False,
            "push": False,
            "triage": False,
            "pull": True,
        }
        data["network_count"] = 0
        data["subscribers_count"] = 0
    return data


def labels_json(ctx: Ctx, repo: RepoRecord, names: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        label_id = zlib.crc32(f"{repo.full_name}:{name}".encode()) + 1_000_000_000
        out.append(
            {
                "id": label_id,
                "node_id": node_id("Label", label_id),
                "url": f"{ctx.api}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "color": f"{label_id & 0xFFFFFF:06x}",
                "default": False,
                "description": None,
            }
        )
    return out


def _association(repo: RepoRecord, item: ItemRecord) -> str:
    if item.author is not None and item.author.lower() == repo.owner.lower():
        return "OWNER"
    return "CONTRIBUTOR" if item.is_pull else "NONE"


def issue_json(ctx: Ctx, repo: RepoRecord, item: ItemRecord) -> dict[str, Any]:
    repo_url = f"{ctx.api}/repos/{repo.full_name}"
    url = f"{repo_url}/issues/{item.number}"
    html = f"{ctx.html}/{repo.full_name}/{'pull' if item.is_pull else 'issues'}/{item.number}"
    data: dict[str, Any] = {
        "url": url,
        "repository_url": repo_url,
        "labels_url": f"{url}/labels{{/name}}",
        "comments_url": f"{url}/comments",
        "events_url": f"{url}/events",
        "html_url": html,
        "id": item.issue_id,
        "node_id": node_id("Issue", item.issue_id),
        "number": item.number,
        "title": item.title,
        "user": login_json(ctx, item.author),
        "labels": labels_json(ctx, repo, item.labels),
        "state": item.state,
        "locked": item.locked,
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "comments": item.comments,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "closed_at": iso(item.closed_at),
        "author_association": _association(repo, item),
        "type": None,
        "active_lock_reason": None,
    }
    if item.is_pull:
        pull_url = f"{repo_url}/pulls/{item.number}"
        data["draft"] = item.draft
        data["pull_request"] = {
            "url": pull_url,
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "merged_at": iso(item.merged_at),
        }
    data.update(
        {
            "body": item.body,
            "closed_by": None,
            "reactions": {
                "url": f"{url}/reactions",
                "total_count": 0,
                "+1": 0,
                "-1": 0,
                "laugh": 0,
                "hooray": 0,
                "confused": 0,
                "heart": 0,
                "rocket": 0,
                "eyes": 0,
            },
            "timeline_url": f"{url}/timeline",
            "performed_via_github_app": None,
            "state_reason": _state_reason(item),
        }
    )
    return data


def _state_reason(item: ItemRecord) -> str | None:
    if item.state == "open" or item.is_pull:
        return None
    return "completed"


def pull_json(
    ctx: Ctx,
    repo: RepoRecord,
    item: ItemRecord,
    full: bool = True,
    repo_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A PR as returned by GET /pulls/{n} (``full``) or as a GET /pulls list item."""
    repo_url = f"{ctx.api}/repos/{repo.full_name}"
    url = f"{repo_url}/pulls/{item.number}"
    html = f"{ctx.html}/{repo.full_name}/pull/{item.number}"
    issue_url = f"{repo_url}/issues/{item.number}"
    if repo_data is None:
        repo_data = repo_json(ctx, repo, full=False)
    owner = repo_data["owner"]

    def branch(ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": owner,
            "repo": repo_data,
        }

    data: dict[str, Any] = {
        "url": url,
        "id": item.id,
        "node_id": node_id("PullRequest", item.id),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue_url,
        "number": item.number,
        "state": item.state,
        "locked": item.locked,
        "title": item.title,
        "user": login_json(ctx, item.author),
        "body": item.body,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "closed_at": iso(item.closed_at),
        "merged_at": iso(item.merged_at),
        "merge_commit_sha": item.merge_commit_sha,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "labels": labels_json(ctx, repo, item.labels),
        "milestone": None,
        "draft": item.draft,
        "commits_url": f"{url}/commits",
        "review_comments_url": f"{url}/comments",
        "review_comment_url": f"{repo_url}/pulls/comments{{/number}}",
        "comments_url": f"{issue_url}/comments",
        "statuses_url": f"{repo_url}/statuses/{item.head_sha}",
        "head": branch(item.head_ref, item.head_sha),
        "base": branch(item.base_ref, item.base_sha),
        "_links": {
            "self": {"href": url},
            "html": {"href": html},
            "issue": {"href": issue_url},
            "comments": {"href": f"{issue_url}/comments"},
            "review_comments": {"href": f"{url}/comments"},
            "review_comment": {"href": f"{repo_url}/pulls/comments{{/number}}"},
            "commits": {"href": f"{url}/commits"},
            "statuses": {"href": f"{repo_url}/statuses/{item.head_sha}"},
        },
        "author_association": _association(repo, item),
        "auto_merge": None,
        "active_lock_reason": None,
    }
    if full:
        data.update(
            {
                "merged": item.merged,
                "mergeable": None if item.state == "closed" else True,
                "rebaseable": None if item.state == "closed" else True,
                "mergeable_state": "unknown" if item.state == "closed" else "clean",
                "merged_by": login_json(ctx, item.merged_by or item.author)
                if item.merged
                else None,
                "comments": item.comments,
                "review_comments": item.review_comments,
                "maintainer_can_modify": False,
                "commits": item.commits,
                "additions": item.additions,
                "deletions": item.deletions,
                "changed_files": item.changed_files,
            }
        )
    return data
