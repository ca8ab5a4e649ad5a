"""A bounded local file that keeps audit events while Redis cannot take them.

One JSON document per line, in the order the events were emitted. ``append`` writes a whole
batch with one ``write`` and fsyncs it, so an event the sink counted as spooled survives a
crash of the worker. ``read`` hands out complete lines from the replay position and
``advance`` moves that position past them once they are in Redis; when every line is
replayed the file is emptied. Replay is at-least-once: after a crash in the middle of one,
the file is replayed from its start again (event ids are unique and the ingest side drops
duplicates).

Not thread-safe: the caller runs one method at a time (``append`` may run in a thread while
nothing else touches the spool).

One process at a time: a ``Spool`` holds an exclusive ``flock`` on its file from open to
``close`` (or ``remove``), and opening a file another live process holds raises
:class:`SpoolBusy`. A compaction locks the new file before renaming it over the old one, so
the file at ``path`` is never unlocked while the spool is open. The kernel drops the lock when
the process dies, so a crashed worker's spool can be opened at once.

The size cap is on the file itself. When a batch does not fit, lines already replayed are
compacted away first; if it still does not fit, the lines that do not fit are dropped (the
newest ones: the order of what is kept never changes) and counted in
``sqlproxy_audit_spool_dropped_total``. This module never talks to Redis.
"""

from __future__ import annotations

import errno
import fcntl
import os

from prometheus_client import Counter, Gauge

SPOOLED = Counter("sqlproxy_audit_spooled", "Audit events written to the local spool")
SPOOL_DROPPED = Counter(
    "sqlproxy_audit_spool_dropped", "Audit events dropped because the local spool was full"
)
SPOOL_BYTES = Gauge(
    "sqlproxy_audit_spool_bytes",
    "Size of the local audit spools this process has open",
    multiprocess_mode="livesum",
)


class SpoolBusy(OSError):
    """The spool file is locked by another live process."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EWOULDBLOCK, "audit spool in use by another process", path)


class Spool:
    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd = _open_locked(path)
        try:
            self._size = _trim_partial_line(self._fd)
        except BaseException:
            os.close(self._fd)
            raise
        self._position = 0
        """Where replay continues: every byte before it is in Redis."""
        self._reported = 0
        self._report_size()

    @property
    def pending(self) -> int:
        """Bytes written and not replayed yet."""
        return self._size - self._position

    def append(self, lines: list[bytes]) -> int:
        """Write what fits of ``lines`` (each ending in a newline) and fsync; returns how many
        lines were dropped for lack of room."""
        needed = sum(len(line) for line in lines)
        if self._size + needed > self.max_bytes and self._position > 0:
            self._compact()
        room = self.max_bytes - self._size
        kept: list[bytes] = []
        for line in lines:
            if len(line) > room:
                break
            kept.append(line)
            room -= len(line)
        if kept:
            data = b"".join(kept)
            _write_all(self._fd, data)
            os.fsync(self._fd)
            self._size += len(data)
            self._report_size()
            SPOOLED.inc(len(kept))
        dropped = len(lines) - len(kept)
        if dropped:
            SPOOL_DROPPED.inc(dropped)
        return dropped

    def read(self, max_bytes: int = 1 << 20) -> tuple[list[bytes], int]:
        """Complete lines from the replay position (at least one, if any is pending) and how
        many bytes they take; give that to ``advance`` once they are in Redis."""
        start, size = self._position, self._size
        if start >= size:
            return [], 0
        data = os.pread(self._fd, min(max_bytes, size - start), start)
        end = data.rfind(b"\n") + 1
        if end == 0:  # one line longer than max_bytes
            data = os.pread(self._fd, size - start, start)
            end = data.find(b"\n") + 1
        return data[:end].splitlines(keepends=True), end

    def advance(self, nbytes: int) -> None:
        """The next ``nbytes`` are in Redis (relative, as a compaction moves the position to
        the file's start); once everything is, empty the file."""
        self._position += nbytes
        if self._position >= self._size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = self._position = 0
            self._report_size()

    def close(self) -> None:
        """Close the file, which releases the lock; what it holds stays for the next open."""
        SPOOL_BYTES.dec(self._reported)
        self._reported = 0
        os.close(self._fd)

    def remove(self) -> None:
        """Delete the file and close it. It is unlinked while still locked, so no other
        process can take it over in between."""
        try:
            os.unlink(self.path)
            _fsync_directory(os.path.dirname(self.path))
        finally:
            self.close()

    def _compact(self) -> None:
        """Rewrite the file without the lines already replayed (atomically: temp + rename).
        The temp file is locked before the rename and its descriptor becomes the spool's: the
        file at ``path`` is locked at every moment."""
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            offset = self._position
            while offset < self._size:
                chunk = os.pread(self._fd, min(1 << 20, self._size - offset), offset)
                _write_all(fd, chunk)
                offset += len(chunk)
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        self._size -= self._position
        self._position = 0
        self._report_size()
        _fsync_directory(os.path.dirname(self.path))

    def _report_size(self) -> None:
        # By difference, not set(): one process can have several spools open (its own and the
        # orphans it replays), and the gauge is their sum.
        SPOOL_BYTES.inc(self._size - self._reported)
        self._reported = self._size


def _open_locked(path: str) -> int:
    """Open (creating it if needed) and lock the file at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _still_at(fd, path):
                return fd
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(path) from None
        except BaseException:
            os.close(fd)
            raise
        # The file locked here left ``path`` between open and flock, while its holder had it
        # locked: renamed over by a compaction, or removed after a replay. Try again.
        os.close(fd)


def _still_at(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _trim_partial_line(fd: int) -> int:
    """A crash in the middle of an append can leave half a line at the end: cut it off."""
    size = end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - (1 << 16))
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    if end != size:
        os.ftruncate(fd, end)
        os.fsync(fd)
    return end


def _write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def _fsync_directory(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
