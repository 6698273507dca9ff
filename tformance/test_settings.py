"""Settings for the test suite: the real settings plus test-only keys and speed-ups.

Secrets are set through the environment before the real settings are read, so the same
code path (and the same start-up checks) runs in tests as in production.
"""

import os
import tempfile

# Fixed, public test keys: the second one lets tests rotate from it to the first. A Fernet
# key's first 16 bytes sign and its last 16 encrypt: the two keys must differ in the first
# half, or a value encrypted with one passes the other's signature check and decrypts to
# garbage about once in 256 tries instead of being refused.
TEST_ENCRYPTION_KEYS = (
    "Zmlyc3QgdGZvcm1hbmNlIHRlc3Qga2V5IChwdWJsaWM=",
    "b3RoZXIgdGZvcm1hbmNlIHRlc3Qga2V5IChwdWJsaWM=",
)
os.environ.setdefault("SECRET_KEY", "tformance-test-secret-key")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", TEST_ENCRYPTION_KEYS[0])

from tformance.settings import *  # noqa: E402,F403
from tformance.settings import DATABASES  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The emulator answers on loopback; pacing would only slow the suite (tests of pacing set it).
GITHUB_TOKEN_MIN_INTERVAL_MS = 0
GITHUB_TIMEOUT = 10

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not ":memory:", so subprocesses (sync_repo killed mid-sync) share the test
    # database and tests can read the raw bytes on disk; one per pytest process, so two
    # runs on one machine never share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"tformance-test-{os.getpid()}.sqlite3")
    }

# Unit tests run actors on a StubBroker with the production middleware list; end-to-end tests
# start real redis-server and worker processes with the production settings.
DRAMATIQ_BROKER = {
    **DRAMATIQ_BROKER,  # noqa: F405
    "BROKER": "dramatiq.brokers.stub.StubBroker",
    "OPTIONS": {},
}
GITHUB_RATE_LIMIT_JITTER_SECONDS = 0.2
