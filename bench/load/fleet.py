"""The fleet: teams, tokens and repositories on the emulator and in the database.

Import after ``django.setup()`` (models).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction

from apps.integrations.models import GitHubIntegration, IntegrationCredential, TrackedRepository
from apps.teams.models import Team
from bench.load.config import LoadConfig
from devtools.github_emulator import GitHubEmulator
from devtools.github_emulator.realistic import realistic_pull_fields

WINDOW = timedelta(days=85)  # inside the sync's 90-day first-sync window
LARGE_SHARE = 200  # one repository in this many has thousands of PRs


@dataclass
class FleetTeam:
    slug: str
    token: str
    repo_ids: list[int] = field(default_factory=list)


@dataclass
class Fleet:
    teams: list[FleetTeam]
    repo_team: dict[int, str]  # tracked repository id -> team slug
    repo_names: dict[int, str]  # tracked repository id -> full name
    dry: list[str]  # team slugs whose token runs dry in round 1
    revoked: str  # the team slug whose token is revoked in round 1
    pulls: int
    issues: int
    large: list[tuple[str, int]]  # (full name, PRs) of the large repositories

    def team(self, slug: str) -> FleetTeam:
        return next(team for team in self.teams if team.slug == slug)


def _sizes(rng: random.Random, count: int) -> list[int]:
    """PRs per repository: most a handful, some a few hundred, one in LARGE_SHARE thousands."""
    sizes = []
    for _ in range(count):
        draw = rng.random()
        if draw < 0.70:
            sizes.append(rng.randint(0, 20))
        elif draw < 0.95:
            sizes.append(rng.randint(21, 100))
        else:
            sizes.append(rng.randint(101, 400))
    for index in rng.sample(range(count), max(1, count // LARGE_SHARE)):
        sizes[index] = rng.randint(2_000, 4_000)
    return sizes


def _seed_repository(emu: GitHubEmulator, full_name: str, pulls: int, rng: random.Random) -> int:
    """``pulls`` PRs and about a fifth as many plain issues, spread over the window. Returns
    the number of issues."""
    emu.add_repo(full_name)
    issues = pulls // 5
    kinds = [True] * pulls + [False] * issues
    rng.shuffle(kinds)
    start = emu.now() - WINDOW
    step = (WINDOW - timedelta(hours=1)) / max(len(kinds), 1)
    for index, is_pull in enumerate(kinds):
        created = start + step * index
        updated = created + min(step / 2, timedelta(minutes=30)) * rng.random()
        if is_pull:
            fields = realistic_pull_fields(rng, index)
            emu.add_pull(full_name, created_at=created, updated_at=updated, **fields)
        else:
            emu.add_issue(full_name, author="alice", created_at=created, updated_at=updated)
    return issues


def build(emu: GitHubEmulator, config: LoadConfig) -> Fleet:
    """Seed the emulator and track every repository: per team a token, an integration with
    its encrypted credential and its tracked rows (as ``track_repo`` makes them, in bulk)."""
    rng = random.Random(config.seed)
    sizes = _sizes(rng, config.repos)
    teams = [
        FleetTeam(slug=f"team-{k:02d}", token=f"ghp_loadteam{k:04d}{'0' * 24}")
        for k in range(config.teams)
    ]
    dry = [team.slug for team in teams[: config.dry_tokens]]
    revoked = teams[config.dry_tokens].slug
    for team in teams:
        # Plenty per window: the dry tokens run out when the run drains them mid-round.
        emu.add_token(team.token, login=f"{team.slug}-bot", rate_limit=1_000_000)
    names: list[tuple[FleetTeam, str, int]] = []
    issues = 0
    large = []
    for index, pulls in enumerate(sizes):
        team = teams[index % config.teams]
        full_name = f"{team.slug}/repo-{index:05d}"
        issues += _seed_repository(emu, full_name, pulls, rng)
        names.append((team, full_name, pulls))
        if pulls >= 2_000:
            large.append((full_name, pulls))
    repo_team: dict[int, str] = {}
    repo_names: dict[int, str] = {}
    with transaction.atomic():
        rows = {}
        for team in teams:
            row = Team.objects.create(slug=team.slug, name=team.slug)
            integration = GitHubIntegration.objects.create(team=row, account_login=team.slug)
            IntegrationCredential.objects.create(integration=integration, access_token=team.token)
            rows[team.slug] = (row, integration)
        tracked = TrackedRepository.objects.bulk_create(
            TrackedRepository(
                team=rows[team.slug][0],
                integration=rows[team.slug][1],
                github_repo_id=emu.get_repo(full_name).id,
                full_name=full_name,
            )
            for team, full_name, _ in names
        )
    for (team, full_name, _), row in zip(names, tracked, strict=True):
        team.repo_ids.append(row.pk)
        repo_team[row.pk] = team.slug
        repo_names[row.pk] = full_name
    return Fleet(
        teams=teams,
        repo_team=repo_team,
        repo_names=repo_names,
        dry=dry,
        revoked=revoked,
        pulls=sum(sizes),
        issues=issues,
        large=large,
    )


def change_some(emu: GitHubEmulator, config: LoadConfig, fleet: Fleet) -> tuple[int, int, int]:
    """A day on GitHub: about ``changed_share`` of the repositories see a few PR edits (or
    merges), and some of them new PRs. Returns (repositories, PRs edited, PRs opened)."""
    rng = random.Random(config.seed + 2)
    names = sorted(fleet.repo_names.values())
    chosen = rng.sample(names, max(1, round(len(names) * config.changed_share)))
    edited = opened = 0
    for full_name in chosen:
        pulls = [item for item in emu.items(full_name) if item.is_pull]
        for item in rng.sample(pulls, min(len(pulls), rng.randint(1, 5))):
            if item.state == "open" and not item.draft:
                emu.update(full_name, item.number, state="merged")
            else:
                emu.update(full_name, item.number, title=item.title + " (edited)")
            edited += 1
        if not pulls or rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                emu.add_pull(full_name, **realistic_pull_fields(rng, 0))
                opened += 1
    return len(chosen), edited, opened
