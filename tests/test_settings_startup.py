"""Start-up behaviour of the real settings module, run as an operator would run manage.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import processes
from tformance.test_settings import TEST_ENCRYPTION_KEYS

REPO_ROOT = Path(__file__).resolve().parent.parent
VALID_KEY = TEST_ENCRYPTION_KEYS[0]

pytestmark = pytest.mark.slow


@pytest.fixture
def environment(tmp_path) -> dict[str, str]:
    """The caller's environment without any of our settings, on a throwaway database."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}
        and not name.startswith("GITHUB_")
    }
    env["DJANGO_SETTINGS_MODULE"] = "tformance.settings"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_secret_key_stops_start_up_with_one_line(environment):
    # Given production mode with an encryption key but no SECRET_KEY
    environment["FIELD_ENCRYPTION_KEY"] = VALID_KEY

    # When the operator runs any command
    result = manage(environment, "check")

    # Then it exits 1 with a single line naming the missing setting
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "SECRET_KEY" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_encryption_key_stops_start_up_with_one_line(environment):
    # Given production mode with a SECRET_KEY but no FIELD_ENCRYPTION_KEY
    environment["SECRET_KEY"] = "a-production-secret"

    # When the operator runs any command
    result = manage(environment, "check")

    # Then it exits 1 with a single line naming the missing setting
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "FIELD_ENCRYPTION_KEY" in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_mode_starts_with_development_defaults_and_warns(environment):
    # Given development mode with neither secret set
    environment["DEBUG"] = "true"

    # When the developer runs a command
    result = manage(environment, "check")

    # Then it runs, warning about each development default
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "development default" in line]
    assert any("SECRET_KEY" in line for line in warnings), result.stderr
    assert any("FIELD_ENCRYPTION_KEY" in line for line in warnings), result.stderr


def test_production_with_both_secrets_starts_without_warnings(environment):
    # Given production mode with both secrets set
    environment["SECRET_KEY"] = "a-production-secret"
    environment["FIELD_ENCRYPTION_KEY"] = VALID_KEY

    # When the operator runs a command
    result = manage(environment, "check")

    # Then it runs quietly
    assert result.returncode == 0, result.stderr
    assert "development default" not in result.stderr


def test_invalid_encryption_key_fails_rotation_with_one_line_error(environment, transactional_db):
    # Given a database holding a credential stored under a valid key
    environment["SECRET_KEY"] = "a-production-secret"
    environment["FIELD_ENCRYPTION_KEY"] = VALID_KEY
    environment["DATABASE_URL"] = processes.database_url()
    stored = manage(
        environment,
        "shell",
        "-c",
        "from apps.teams.models import Team\n"
        "from apps.integrations.models import GitHubIntegration, IntegrationCredential\n"
        "team = Team.objects.create(slug='acme', name='Acme')\n"
        "i = GitHubIntegration.objects.create(team=team, account_login='octocat')\n"
        "IntegrationCredential.objects.create(integration=i, access_token='ghp_' + 'a' * 36)\n",
    )
    assert stored.returncode == 0, stored.stderr

    # When the operator configures a malformed key and rotates
    environment["FIELD_ENCRYPTION_KEY"] = "not-a-fernet-key"
    result = manage(environment, "rotate_encryption_key")

    # Then it exits 1 with one line naming the setting (and not the key), no traceback
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "FIELD_ENCRYPTION_KEY" in lines[0]
    assert "not-a-fernet-key" not in lines[0]


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("https://github.example.com/api/v3", "https://github.example.com/api/v3"),
        ("https://github.example.com/api/v3/", "https://github.example.com/api/v3"),
        ("", "https://api.github.com"),
    ],
    ids=["as-given", "trailing-slash-stripped", "default"],
)
def test_github_api_url_comes_from_the_environment(environment, configured, expected):
    # Given GITHUB_API_URL in the environment
    environment["DEBUG"] = "true"
    environment["GITHUB_API_URL"] = configured

    # When the settings are loaded
    result = manage(
        environment,
        "shell",
        "-c",
        "from django.conf import settings; print('URL=' + settings.GITHUB_API_URL)",
    )

    # Then the setting holds the URL, without a trailing slash
    assert result.returncode == 0, result.stderr
    assert f"URL={expected}" in result.stdout.splitlines()
