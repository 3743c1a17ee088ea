"""celery-beat's database scheduler, made safe to start twice.

Only the beat that holds the beat lock sends anything; another one started by mistake (a
second replica, a forgotten process) stands by and takes over if the first one dies. On
PostgreSQL the lock is a session advisory lock on a connection of its own, released by the
server the moment the holder's connection drops; on SQLite (the embedded mode) it is a file
lock next to the database.
"""

import fcntl
import logging
import zlib

import psycopg
from django.conf import settings
from django.db import connections
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

LOCK_KEY = zlib.crc32(b"taskflow-beat")
STANDBY_RETRY_SECONDS = 5


class PostgresBeatLock:
    def __init__(self, db_settings: dict):
        self.db_settings = db_settings
        self.connection = None

    def _connect(self):
        db = self.db_settings
        return psycopg.connect(
            dbname=db["NAME"],
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            autocommit=True,
            connect_timeout=5,
        )

    def acquire(self) -> bool:
        try:
            if self.connection is not None and not self.connection.closed:
                self.connection.execute("SELECT 1")  # still ours while the session lives
                return True
            self.connection = self._connect()
            held = self.connection.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
            if not held:
                self.connection.close()
                self.connection = None
            return held
        except psycopg.Error as exc:
            logger.warning("beat lock: database unreachable (%s)", exc)
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return False


class FileBeatLock:
    def __init__(self, path):
        self.path = path
        self.handle = None

    def acquire(self) -> bool:
        if self.handle is not None:
            return True
        handle = open(self.path, "a")  # noqa: SIM115 (held open as long as the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True


def beat_lock():
    db = settings.DATABASES["default"]
    # By vendor, not ENGINE: a wrapper of Django's backend would have another ENGINE.
    if connections["default"].vendor == "postgresql":
        return PostgresBeatLock(db)
    return FileBeatLock(settings.VAR_DIR / "beat.lock")


class SingleBeatScheduler(DatabaseScheduler):
    def __init__(self, *args, **kwargs):
        self._beat_lock = beat_lock()
        self._active = None
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):
        active = self._beat_lock.acquire()
        if active != self._active:
            self._active = active
            if active:
                logger.warning("beat lock acquired: this beat sends the schedules")
            else:
                logger.warning("another beat holds the beat lock: standing by")
        if not active:
            return STANDBY_RETRY_SECONDS
        return super().tick(*args, **kwargs)
