"""Credentials at rest: encryption, masking, key rotation, disconnecting, and team scoping."""

from __future__ import annotations

import logging
import secrets
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from apps.integrations.crypto import Secret
from apps.integrations.models import (
    GitHubIntegration,
    IntegrationCredential,
    PullRequest,
    TrackedRepository,
)
from apps.teams.models import Team
from tests.builders import connected_team, new_token
from tformance.test_settings import TEST_ENCRYPTION_KEYS

NEW_KEY, OLD_KEY = TEST_ENCRYPTION_KEYS


def stored_ciphertext(credential: IntegrationCredential) -> str:
    """The access_token column exactly as the database holds it."""
    assert IntegrationCredential._meta.db_table == "integrations_integrationcredential"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token FROM integrations_integrationcredential WHERE id = %s",
            [credential.pk],
        )
        return cursor.fetchone()[0]


def sqlite_file_bytes() -> bytes:
    path = Path(connection.settings_dict["NAME"])
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def postgres_wal_position() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        return cursor.fetchone()[0]


def postgres_file_bytes(*, wal_since: str) -> bytes:
    """The files of every table, index and TOAST table of the database, and the write-ahead
    log written since ``wal_since``, as the server holds them on disk."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('is_superuser') = 'on'")
        if not cursor.fetchone()[0]:
            pytest.skip("reading the server's files needs a superuser in DATABASE_URL")
        cursor.execute("CHECKPOINT")  # the committed rows reach the table files
        cursor.execute(
            "SELECT pg_read_binary_file(pg_relation_filepath(oid)) FROM pg_class"
            " WHERE relkind IN ('r', 'i', 't', 'm') AND relpersistence = 'p'"
        )
        relations = [bytes(row[0]) for row in cursor.fetchall()]
        cursor.execute(
            "SELECT pg_read_binary_file('pg_wal/' || name) FROM pg_ls_waldir()"
            " WHERE name ~ '^[0-9A-F]{24}$'"
            " AND name BETWEEN pg_walfile_name(%s) AND pg_walfile_name(pg_current_wal_lsn())",
            [wal_since],
        )
        wal = [bytes(row[0]) for row in cursor.fetchall()]
    assert relations and wal
    return b"".join(relations + wal)


def saved_credential_next_to_a_marker() -> tuple[str, str]:
    """A credential saved and committed, next to a plaintext marker we can look for."""
    token = new_token()
    marker = f"marker-{secrets.token_hex(8)}"
    team = Team.objects.create(slug=marker, name=marker)
    integration = GitHubIntegration.objects.create(team=team, account_login=marker)
    IntegrationCredential.objects.create(integration=integration, access_token=token)
    return token, marker


# -- encryption at rest ----------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_token_plaintext_never_reaches_the_database_file(transactional_db):
    # Given a credential saved and committed, next to a plaintext marker
    token, marker = saved_credential_next_to_a_marker()

    # When we read the raw bytes of the SQLite file (and its write-ahead log)
    raw = sqlite_file_bytes()

    # Then the committed rows are there, but the token is not, in any form
    assert marker.encode() in raw
    assert token.encode() not in raw
    assert token.encode("utf-16-le") not in raw


@pytest.mark.postgres_only
def test_token_plaintext_never_reaches_the_postgres_files(transactional_db):
    # Given a credential saved and committed, next to a plaintext marker
    wal_since = postgres_wal_position()
    token, marker = saved_credential_next_to_a_marker()

    # When we read the raw bytes of the tables, indexes and write-ahead log on the server
    raw = postgres_file_bytes(wal_since=wal_since)

    # Then the committed rows are there, but the token is not, in any form
    assert raw.count(marker.encode()) >= 2  # the table and the log both hold the row
    assert token.encode() not in raw
    assert token.encode("utf-16-le") not in raw


@pytest.mark.django_db
def test_stored_column_holds_ciphertext_not_the_token():
    # Given a stored credential
    token = new_token()
    credential = connected_team("acme", token=token).credential

    # When we read its column with plain SQL
    ciphertext = stored_ciphertext(credential)

    # Then it is a Fernet token that decrypts to the access token
    assert token not in ciphertext
    assert Fernet(NEW_KEY.encode()).decrypt(ciphertext.encode()).decode() == token


# -- masking ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_credential_read_back_reveals_the_token_only_on_request():
    # Given a stored credential
    token = new_token()
    integration = connected_team("acme", token=token)

    # When it is read back from the database
    secret = IntegrationCredential.objects.get(integration=integration).access_token

    # Then it is a Secret whose reveal() is the token and whose str/repr are masked
    assert isinstance(secret, Secret)
    assert secret.reveal() == token
    assert token not in str(secret)
    assert token not in repr(secret)
    assert "****" in str(secret)


@pytest.mark.django_db
def test_secret_in_an_fstring_shows_a_mask():
    # Given a credential read back from the database
    token = new_token()
    integration = connected_team("acme", token=token)
    secret = IntegrationCredential.objects.get(integration=integration).access_token

    # When it is interpolated into a message
    message = f"using {secret} for {integration.account_login} ({secret!r})"

    # Then the message shows the mask, never the token
    assert token not in message
    assert "****" in message


@pytest.mark.django_db
def test_logging_a_secret_shows_a_mask(caplog):
    # Given a credential read back from the database
    token = new_token()
    integration = connected_team("acme", token=token)
    credential = IntegrationCredential.objects.get(integration=integration)

    # When it is logged, as an argument and as extra data
    logger = logging.getLogger("apps.integrations.test")
    with caplog.at_level(logging.INFO, logger="apps.integrations.test"):
        logger.info(
            "token is %s", credential.access_token, extra={"token": credential.access_token}
        )

    # Then the log shows the mask, never the token
    record = caplog.records[-1]
    assert token not in caplog.text
    assert "****" in record.getMessage()
    assert token not in str(record.token)


# -- key rotation ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_rotation_lets_the_old_key_be_dropped(settings):
    # Given a credential stored under the old key
    token = new_token()
    settings.FIELD_ENCRYPTION_KEY = [OLD_KEY]
    integration = connected_team("acme", token=token)

    # When the new key is put first and the credentials are rotated
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY, OLD_KEY]
    call_command("rotate_encryption_key", stdout=StringIO(), stderr=StringIO())

    # Then with only the new key configured the token still decrypts
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY]
    credential = IntegrationCredential.objects.get(integration=integration)
    assert credential.access_token.reveal() == token


@pytest.mark.django_db
def test_rotation_rewrites_the_stored_ciphertext(settings):
    # Given a credential stored under the old key
    settings.FIELD_ENCRYPTION_KEY = [OLD_KEY]
    credential = connected_team("acme").credential
    before = stored_ciphertext(credential)

    # When the new key is put first and the credentials are rotated
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY, OLD_KEY]
    out = StringIO()
    call_command("rotate_encryption_key", stdout=out, stderr=StringIO())

    # Then the column holds a different ciphertext, one the old key alone cannot read
    after = stored_ciphertext(credential)
    assert after != before
    assert Fernet(NEW_KEY.encode()).decrypt(after.encode())
    assert "Re-encrypted 1 credential(s)" in out.getvalue()


@pytest.mark.django_db
def test_rotation_with_an_undecryptable_credential_fails_and_changes_nothing(settings):
    # Given two readable credentials around one stored under a key that is no longer configured
    settings.FIELD_ENCRYPTION_KEY = [OLD_KEY]
    first_token, lost_token, last_token = new_token(), new_token(), new_token()
    first = connected_team("alpha", token=first_token).credential
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    lost = connected_team("bravo", token=lost_token).credential
    settings.FIELD_ENCRYPTION_KEY = [OLD_KEY]
    last = connected_team("charlie", token=last_token).credential
    before = {c.pk: stored_ciphertext(c) for c in (first, lost, last)}

    # When the operator rotates to the new key
    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY, OLD_KEY]
    stdout, stderr = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("rotate_encryption_key", stdout=stdout, stderr=stderr)

    # Then it exits 1 with one line naming the credential (not its token), and changes nothing
    assert exited.value.code == 1
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert f"credential {lost.pk}" in lines[0]
    assert "Traceback" not in stderr.getvalue()
    for token in (first_token, lost_token, last_token):
        assert token not in stderr.getvalue() + stdout.getvalue()
    assert {c.pk: stored_ciphertext(c) for c in (first, lost, last)} == before


# -- disconnecting ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_the_credential_disconnects_the_integration():
    # Given a connected integration
    integration = connected_team("acme")
    assert integration.is_connected

    # When its credential is deleted
    IntegrationCredential.objects.get(integration=integration).delete()

    # Then the integration reads as disconnected
    assert not GitHubIntegration.objects.get(pk=integration.pk).is_connected


@pytest.mark.django_db
def test_deleting_the_credential_keeps_integration_repositories_and_pull_requests():
    # Given a connected integration with two repositories and their pull requests
    integration = connected_team("acme", repos=2)

    # When its credential is deleted
    IntegrationCredential.objects.get(integration=integration).delete()

    # Then nothing else went with it
    assert GitHubIntegration.objects.filter(pk=integration.pk).exists()
    assert TrackedRepository.objects.filter(integration=integration).count() == 2
    assert PullRequest.objects.filter(tracked_repo__integration=integration).count() == 2


# -- team scoping ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_objects_manager_sees_every_team():
    # Given two teams with repositories and pull requests
    connected_team("acme", repos=2)
    connected_team("globex", repos=1)

    # When rows are listed through the default manager
    # Then every team's rows are there
    assert TrackedRepository.objects.count() == 3
    assert PullRequest.objects.count() == 3
    assert GitHubIntegration.objects.count() == 2


@pytest.mark.django_db
def test_for_team_scopes_rows_to_one_team():
    # Given two teams with repositories and pull requests
    acme = connected_team("acme", repos=2).team
    globex = connected_team("globex", repos=1).team

    # When rows are listed for one team (by object or by id)
    repos = TrackedRepository.objects.for_team(acme)
    prs = PullRequest.objects.for_team(globex.pk)

    # Then only that team's rows come back
    assert {r.full_name for r in repos} == {"acme/repo-0", "acme/repo-1"}
    assert [pr.tracked_repo.full_name for pr in prs] == ["globex/repo-0"]
    assert [i.team for i in GitHubIntegration.objects.for_team(globex)] == [globex]
