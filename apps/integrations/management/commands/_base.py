from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.recorder import MigrationRecorder

if TYPE_CHECKING:
    from apps.integrations.models import TrackedRepository

# sysexits.h EX_TEMPFAIL: "try again later" (rate limits, GitHub unavailable).
EXIT_TEMPFAIL = 75

RUN_MIGRATE = "run: python manage.py migrate"


class OperatorCommand(BaseCommand):
    """A command for operators: errors are one line on stderr and an exit code, never a
    traceback. The project's log lines show only with ``-v 2`` or more, so stderr holds the
    error line and nothing else.

    A database that was never migrated, or is behind the code, is such an error too: the
    command says to run ``migrate`` instead of failing on the first missing table.
    """

    # Django's hook, run before handle(); check_migrations below decides what it does.
    requires_migrations_checks = True

    def execute(self, *args: Any, **options: Any) -> Any:
        logger = logging.getLogger("apps")
        level = logger.level
        if options.get("verbosity", 1) < 2:
            logger.setLevel(logging.ERROR)
        try:
            return super().execute(*args, **options)
        except DatabaseError:
            # A table or column the code expects is missing when the database is behind the
            # code. Only a failure is worth the migration plan's cost (it imports every
            # migration); any other database error keeps its traceback.
            if not _migrations_pending():
                raise
            self.fail(f"the database is not up to date; {RUN_MIGRATE}")
        finally:
            logger.setLevel(level)

    def check_migrations(self) -> None:
        """Stop with one line when the database was never migrated.

        Django's version prints a warning and lets the command run on into a traceback, and
        computes the whole migration plan to do so. A database without Django's migration
        table is told by one cheap query; one that is merely behind is caught in execute().
        sync_all needs this up front: it enqueues without touching the database itself.
        """
        if not MigrationRecorder(connections[DEFAULT_DB_ALIAS]).has_table():
            self.fail(f"the database is not set up; {RUN_MIGRATE}")

    def fail(self, message: str, code: int = 1) -> NoReturn:
        self.stderr.write(f"error: {message}")
        self.stderr.flush()
        raise SystemExit(code)

    def find_tracked_repository(
        self, full_name: str, team: str | None, *, hint: str = ""
    ) -> TrackedRepository:
        """The one repository ``full_name`` names (case-insensitively, as GitHub does),
        narrowed to ``team``; else one line and exit 1 (``hint`` follows "is not tracked")."""
        from apps.integrations.models import TrackedRepository

        matches = TrackedRepository.objects.select_related("team", "integration").named(full_name)
        if team:
            matches = matches.filter(team__slug=team)
        found = list(matches[:10])
        if not found:
            where = f" for team {team}" if team else ""
            self.fail(f"{full_name} is not tracked{where}{hint}")
        if len(found) > 1:
            teams = ", ".join(sorted(r.team.slug for r in found))
            self.fail(f"{full_name} is tracked by several teams ({teams}); pass --team SLUG")
        return found[0]

    def progress(self, message: str) -> None:
        # Progress is for the person watching, so it goes to stderr and keeps stdout for the
        # result line scripts read.
        ending = "\r" if sys.stderr.isatty() else "\n"
        self.stderr.write(message, ending=ending)
        self.stderr.flush()


def _migrations_pending() -> bool:
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    except DatabaseError:
        # The database cannot answer (down, or a failed transaction): the original error is
        # the one to show.
        return False
