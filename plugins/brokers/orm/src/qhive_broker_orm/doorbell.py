"""A doorbell for SQLite: sleepers in other processes of this host woken through
named pipes, where PostgreSQL has ``LISTEN``/``NOTIFY``.

SQLite cannot tell another process that a row arrived, so consumers polled: an
idle cluster answered a task in up to ``poll`` seconds (0.2), and ``result(wait=)``
in up to a quarter of a second. A database file's processes all run on one host, so
they can share a directory beside it, ``<database file>.qhive/<bell>/``. A sleeper
puts a FIFO of its own there while it sleeps (:meth:`Doorbell.sleeper`, which it
looks for work after entering: nothing is missed) and sleeps in ``select()`` on it;
:meth:`Doorbell.ring` writes a byte to each FIFO in the directory (a queue: to one
sleeper per message). A ring with nobody asleep costs one ``stat()`` of the directory
(about 3 µs); a busy consumer never sleeps, so it costs the ringer nothing.

A FIFO appears in the directory already open by its sleeper (made under a hidden name,
which rings skip, then renamed; its sleeper looks for work once it is in place), so a
FIFO nobody holds open is a sleeper that died: the ringer removes it. A ring is a hint,
never the only way to find work: sleepers still wake after their timeout and look.

Only where ``os.mkfifo`` exists (not on Windows: there, the callers poll).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import logging
import os
import select
import struct
import termios
import time
from typing import Any

__all__ = ["Doorbell", "Sleeper", "doorbell_of", "sqlite_doorbell"]

#: An mtime this old was stamped by a clock tick that has passed (ticks are 1 to 10 ms).
SETTLED_NS = 50_000_000

logger = logging.getLogger("qhive.broker.orm")

_names = itertools.count()


class Sleeper:
    """One FIFO in a doorbell's directory, open for reading while it sleeps."""

    def __init__(self, directory: str) -> None:
        name = f"{os.getpid()}-{next(_names)}"
        hidden, self.path = os.path.join(directory, f".{name}"), os.path.join(directory, name)
        os.mkfifo(hidden)  # permissions as the umask says, like the database file's
        try:
            # O_RDWR: the FIFO always has a writer, so select() never sees end-of-file
            self.fd = os.open(hidden, os.O_RDWR | os.O_NONBLOCK)
            os.rename(hidden, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            raise

    def wait(self, seconds: float) -> bool:
        """Sleep until rung (True, the rings read) or ``seconds`` have passed (False)."""
        ready, _, _ = select.select([self.fd], [], [], max(seconds, 0.0))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)

    def __enter__(self) -> Sleeper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Doorbell:
    """The sleepers of one directory: what :meth:`ring` wakes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: The directory's mtime when it was last seen without sleepers (see :meth:`ring`).
        self._empty_at: int | None = None

    def __repr__(self) -> str:
        return f"<Doorbell {self.directory}>"

    def sleeper(self) -> Sleeper:
        """A :class:`Sleeper` that every ring from now on wakes, until it is closed
        (it is a context manager). Raises OSError when the directory is unusable."""
        try:
            return Sleeper(self.directory)
        except FileNotFoundError:
            os.makedirs(self.directory, exist_ok=True)
            return Sleeper(self.directory)

    def ring(self, sleepers: int | None = None) -> None:
        """Wake every sleeper, or up to ``sleepers`` of those not rung yet (a queue
        wakes one consumer per message: waking all would have them fight over one).
        Never raises: a sleeper not woken still looks after its timeout."""
        if sleepers is not None and sleepers <= 0:
            return
        try:
            # A ring with nobody asleep is one stat() (3 µs) instead of a listing (8 µs):
            # any sleeper that came or went since the listing changed the mtime. Only an
            # mtime older than the clock tick that stamps it counts, since two changes
            # within one tick get the same stamp.
            changed = os.stat(self.directory).st_mtime_ns
            if changed == self._empty_at:
                return
            settled = time.time_ns() - changed > SETTLED_NS
            names = [n for n in os.listdir(self.directory) if not n.startswith(".")]
        except OSError:
            return  # nobody ever slept here
        if not names and settled:
            self._empty_at = changed
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nobody reads it: its sleeper died
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                elif exc.errno != errno.ENOENT:  # ENOENT: it just woke and left
                    logger.debug("could not ring %s: %s", path, exc)
                continue
            try:
                if sleepers is not None and _unread(fd):
                    continue  # rung already, not awake yet: wake another
                os.write(fd, b"\0")
            except OSError:  # full of rings not read yet, or its sleeper just left
                continue
            finally:
                os.close(fd)
            if sleepers is not None:
                sleepers -= 1
                if not sleepers:
                    return


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` (either end)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def doorbell_of(connection: Any, bell: str) -> Doorbell | None:
    """The doorbell ``bell`` of a Django connection's database when it is a SQLite
    file, else None. One :class:`Doorbell` per database and bell in a process (it
    remembers when its directory was last seen empty)."""
    if connection.vendor != "sqlite":
        return None
    return _cached(str(connection.settings_dict.get("NAME") or ""), bell)


def sqlite_doorbell(database: str, bell: str) -> Doorbell | None:
    """The doorbell ``bell`` of the SQLite database file ``database`` (its ``NAME``
    in ``settings.DATABASES``, as the connection has it now: tests rename it), or
    None for an in-memory database or a system without named pipes."""
    if not hasattr(os, "mkfifo") or not database or database == ":memory:" or (
            "mode=memory" in database):
        return None
    path = database.removeprefix("file:").split("?", 1)[0]
    return Doorbell(os.path.join(os.path.abspath(path) + ".qhive", bell))


_cached = functools.lru_cache(maxsize=64)(sqlite_doorbell)
