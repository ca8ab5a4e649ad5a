"""The audit spool on its own: order, the size cap, compaction, what survives a crash, the
lock that keeps a second process out, and the size gauge."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxyworker.audit.spool import SPOOL_BYTES, SPOOL_DROPPED, Spool, SpoolBusy
from tests.support.worker import ROOT


def lines(start: int, count: int) -> list[bytes]:
    return [f'{{"id": "e-{i:05d}"}}\n'.encode() for i in range(start, start + count)]


def replay_all(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    while True:
        batch, nbytes = spool.read(max_bytes=100)
        if not batch:
            return out
        out += batch
        spool.advance(nbytes)


def test_it_replays_in_order_and_empties_the_file(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.jsonl"), 1 << 20)
    assert spool.append(lines(0, 10)) == 0
    assert spool.append(lines(10, 5)) == 0
    assert replay_all(spool) == lines(0, 15)
    assert spool.pending == 0
    assert os.path.getsize(tmp_path / "spool.jsonl") == 0


def test_it_keeps_what_it_spooled_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.jsonl")
    first = Spool(path, 1 << 20)
    first.append(lines(0, 20))
    _, nbytes = first.read(max_bytes=100)
    first.advance(nbytes)  # partly replayed, then the process dies
    first.close()
    again = Spool(path, 1 << 20)
    # At least once: the whole file comes again.
    assert replay_all(again) == lines(0, 20)


def test_it_cuts_a_half_written_last_line(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    path.write_bytes(b"".join(lines(0, 3)) + b'{"id": "e-000')
    spool = Spool(str(path), 1 << 20)
    assert replay_all(spool) == lines(0, 3)


def test_it_drops_the_newest_when_full_and_counts_them(tmp_path: Path) -> None:
    size = len(lines(0, 1)[0])
    spool = Spool(str(tmp_path / "spool.jsonl"), size * 10)
    before = SPOOL_DROPPED._value.get()
    assert spool.append(lines(0, 8)) == 0
    assert spool.append(lines(8, 5)) == 3  # two fit
    assert SPOOL_DROPPED._value.get() - before == 3
    assert replay_all(spool) == lines(0, 10)


def test_it_compacts_replayed_lines_to_make_room(tmp_path: Path) -> None:
    size = len(lines(0, 1)[0])
    spool = Spool(str(tmp_path / "spool.jsonl"), size * 10)
    spool.append(lines(0, 10))
    batch, nbytes = spool.read(max_bytes=size * 4)
    assert batch == lines(0, 4)
    spool.advance(nbytes)
    # A read handed out before a compaction stays valid: positions are relative.
    batch, nbytes = spool.read(max_bytes=size * 2)
    assert spool.append(lines(10, 4)) == 0  # room made by dropping the 4 replayed lines
    spool.advance(nbytes)
    assert batch == lines(4, 2)
    assert replay_all(spool) == lines(6, 8)
    assert os.path.getsize(tmp_path / "spool.jsonl") == 0


def test_it_refuses_a_second_opener_while_it_is_open(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "spool.jsonl")
    first = Spool(path, 1 << 20)
    first.append(lines(0, 3))
    with pytest.raises(SpoolBusy, match="in use by another process") as busy:
        Spool(path, 1 << 20)
    assert busy.value.filename == path
    assert first.pending == len(b"".join(lines(0, 3)))  # refused without touching the file
    first.close()
    second = Spool(path, 1 << 20)
    assert replay_all(second) == lines(0, 3)
    second.close()


def test_it_stays_locked_across_a_compaction(tmp_path: Path) -> None:
    size = len(lines(0, 1)[0])
    path = str(tmp_path / "spool.jsonl")
    spool = Spool(path, size * 10)
    spool.append(lines(0, 10))
    _, nbytes = spool.read(max_bytes=size * 4)
    spool.advance(nbytes)
    inode = os.stat(path).st_ino
    assert spool.append(lines(10, 4)) == 0  # makes room by compacting
    assert os.stat(path).st_ino != inode  # a new file took the path...
    assert not os.path.exists(path + ".tmp")
    with pytest.raises(SpoolBusy):  # ...and it is locked too
        Spool(path, size * 10)
    assert replay_all(spool) == lines(4, 10)
    spool.close()
    again = Spool(path, size * 10)
    assert again.pending == 0
    again.close()


HOLD = """
import sys, time
from proxyworker.audit.spool import Spool
spool = Spool(sys.argv[1], 1 << 20)
spool.append([b'{"id": "e-%05d"}\\n' % i for i in range(5)])
print("open", flush=True)
time.sleep(60)
"""
"""A process that opens a spool, appends five lines and waits."""


def test_a_crashed_holder_leaves_it_free(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.jsonl")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"open\n"
        with pytest.raises(SpoolBusy):
            Spool(path, 1 << 20)
    finally:
        holder.kill()
        holder.wait()
    spool = Spool(path, 1 << 20)  # the kernel dropped the lock with the process
    assert replay_all(spool) == lines(0, 5)
    spool.close()


def test_it_deletes_its_file_on_remove(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(str(path), 1 << 20)
    spool.append(lines(0, 3))
    spool.remove()
    assert not path.exists()
    again = Spool(str(path), 1 << 20)  # nothing holds the path any more
    assert again.pending == 0
    again.close()


def test_the_size_gauge_adds_up_the_open_spools(tmp_path: Path) -> None:
    before = SPOOL_BYTES._value.get()
    own = Spool(str(tmp_path / "own.jsonl"), 1 << 20)
    own.append(lines(0, 4))
    orphan = Spool(str(tmp_path / "orphan.jsonl"), 1 << 20)
    orphan.append(lines(4, 2))
    assert SPOOL_BYTES._value.get() - before == len(b"".join(lines(0, 6)))
    replay_all(orphan)
    orphan.remove()
    assert SPOOL_BYTES._value.get() - before == len(b"".join(lines(0, 4)))
    own.close()
    assert SPOOL_BYTES._value.get() == before
