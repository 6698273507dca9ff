from __future__ import annotations

from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class TeamScopedQuerySet(models.QuerySet):
    def for_team(self, team: Team | int) -> TeamScopedQuerySet:
        """Rows owned by ``team`` (a Team or its id). Every team-facing query goes through this."""
        return self.filter(team=team)


class BaseTeamModel(models.Model):
    """A row owned by one team.

    ``objects`` stays Django's plain default manager (admin, migrations and cross-team jobs
    such as the daily fan-out need every row); scoping is explicit via ``.for_team(team)``.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        abstract = True
