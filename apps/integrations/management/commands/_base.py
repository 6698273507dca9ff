from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

from django.core.management.base import BaseCommand

# sysexits.h EX_TEMPFAIL: "try again later" (rate limits, GitHub unavailable).
EXIT_TEMPFAIL = 75


class OperatorCommand(BaseCommand):
    """A command for operators: errors are one line on stderr and an exit code, never a
    traceback. The project's log lines show only with ``-v 2`` or more, so stderr holds the
    error line and nothing else."""

    def execute(self, *args: Any, **options: Any) -> Any:
        logger = logging.getLogger("apps")
        level = logger.level
        if options.get("verbosity", 1) < 2:
            logger.setLevel(logging.ERROR)
        try:
            return super().execute(*args, **options)
        finally:
            logger.setLevel(level)

    def fail(self, message: str, code: int = 1) -> NoReturn:
        self.stderr.write(f"error: {message}")
        self.stderr.flush()
        raise SystemExit(code)

    def progress(self, message: str) -> None:
        # Progress is for the person watching, so it goes to stderr and keeps stdout for the
        # result line scripts read.
        ending = "\r" if sys.stderr.isatty() else "\n"
        self.stderr.write(message, ending=ending)
        self.stderr.flush()
