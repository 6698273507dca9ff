"""GET /metrics: the fleet's state from the database and this process's own counters, scraped
with Django's test client and read with prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.integrations.metrics import request_kind
from apps.integrations.models import TrackedRepository
from apps.integrations.services.github_client import GitHubNotFound, client_for_token
from apps.integrations.services.pacing import token_digest
from apps.integrations.services.sync_jobs import repository_sync_job
from tests import builders

pytestmark = pytest.mark.django_db

Samples = dict[tuple[str, frozenset], float]


def scrape(client, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def set_rows(repo: TrackedRepository, **fields) -> None:
    TrackedRepository.objects.filter(pk=repo.pk).update(**fields)


def test_repositories_by_status_counts_active_repositories(client):
    integration = builders.connected_team("acme", repos=5)
    repos = list(integration.repositories.order_by("pk"))
    set_rows(repos[0], sync_status="error")
    set_rows(repos[1], sync_status="error")
    set_rows(repos[2], sync_status="rate_limited")
    set_rows(repos[3], sync_status="queued", is_active=False)

    found = samples(scrape(client))

    assert value(found, "tformance_repositories", status="idle") == 1
    assert value(found, "tformance_repositories", status="error") == 2
    assert value(found, "tformance_repositories", status="rate_limited") == 1
    assert value(found, "tformance_repositories", status="queued") == 0
    assert value(found, "tformance_repositories", status="syncing") == 0
    assert value(found, "tformance_repositories_inactive") == 1


def test_sync_age_histogram_buckets_active_repositories_by_last_successful_sync(client):
    integration = builders.connected_team("acme", repos=5)
    repos = list(integration.repositories.order_by("pk"))
    now = timezone.now()
    set_rows(repos[0], last_sync_at=now - timedelta(minutes=10))
    set_rows(repos[1], last_sync_at=now - timedelta(hours=5))
    set_rows(repos[2], last_sync_at=now - timedelta(hours=30))
    set_rows(repos[3], last_sync_at=now - timedelta(minutes=1), is_active=False)
    # repos[4] never synced

    found = samples(scrape(client))

    def bucket(le: str) -> float:
        return value(found, "tformance_repository_sync_age_seconds_bucket", le=le)

    assert bucket("3600.0") == 1
    assert bucket("21600.0") == 2
    assert bucket("93600.0") == 2  # the 26 h that sync_status calls stale
    assert bucket("172800.0") == 3
    assert bucket("+Inf") == 3
    assert value(found, "tformance_repositories_never_synced") == 1
    expected = timedelta(minutes=10) + timedelta(hours=5) + timedelta(hours=30)
    assert value(found, "tformance_repository_sync_age_seconds_gsum") == pytest.approx(
        expected.total_seconds(), abs=120
    )


def test_github_request_is_counted_by_kind_and_status(client, emulator):
    emulator.add_repo("acme/widgets")
    github = client_for_token(builders.TOKEN)
    before = samples(scrape(client))

    github.get_repository("acme/widgets")
    with pytest.raises(GitHubNotFound):
        github.get_repository("acme/missing")

    after = samples(scrape(client))
    name = "tformance_github_requests_total"
    for status in ("200", "404"):
        labels = {"kind": "get_repository", "status": status}
        assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_github_answer_sets_remaining_rate_limit_under_a_hashed_token_label(client, emulator):
    emulator.add_repo("acme/widgets")
    emulator.set_rate_limit(builders.TOKEN, remaining=4321)

    client_for_token(builders.TOKEN).get_repository("acme/widgets")

    text = scrape(client)
    remaining = value(
        samples(text),
        "tformance_github_rate_limit_remaining",
        token=token_digest(builders.TOKEN),
        resource="core",
    )
    assert remaining == 4320  # the request itself cost one
    assert builders.TOKEN not in text


def test_transport_failure_is_counted_with_status_error(client, emulator, settings):
    settings.GITHUB_API_URL = "http://127.0.0.1:1"  # nothing listens there
    github = client_for_token(builders.TOKEN)
    before = samples(scrape(client))

    with pytest.raises(Exception):  # noqa: B017,PT011  (which transient error is not the point)
        github.get_authenticated_user()

    labels = {"kind": "user", "status": "error"}
    after = samples(scrape(client))
    name = "tformance_github_requests_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_sync_job_is_counted_by_outcome(client, emulator, days_ago):
    emulator.generate_pulls("acme/widgets", 3, start=days_ago(3), step=timedelta(hours=1))
    repo = builders.tracked_repo(emulator)
    before = samples(scrape(client))

    repository_sync_job(tracked_repo_id=repo.pk, requested_at=None, time_budget=None)
    repository_sync_job(tracked_repo_id=repo.pk + 1000, requested_at=None, time_budget=None)

    after = samples(scrape(client))
    name = "tformance_syncs_total"
    for outcome in ("synced", "skipped"):
        assert value(after, name, outcome=outcome) - value(before, name, outcome=outcome) == 1


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/user", "user"),
        ("/repos/acme/widgets", "get_repository"),
        ("/repos/acme/widgets/issues", "list_issues"),
        ("/repos/acme/widgets/pulls/12", "get_pull"),
        ("/repos/acme/widgets/hooks/7/deliveries", "hooks"),
        ("http://127.0.0.1:8000/graphql", "graphql"),
        ("https://ghe.example.com/api/graphql", "graphql"),
        ("/api/v3/repos/acme/widgets", "get_repository"),
        ("/orgs/acme/repos", "other"),
    ],
)
def test_request_kind_is_a_bounded_label(path, kind):
    assert request_kind(path) == kind


def test_metrics_token_is_required_when_set(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-0123456789"

    refused = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {settings.METRICS_TOKEN}"})

    assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 401, 200)
    assert settings.METRICS_TOKEN not in refused.content.decode()
