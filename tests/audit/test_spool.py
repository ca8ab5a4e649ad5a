"""The audit spool on its own: order, the size cap, compaction, and what survives a crash."""

from __future__ import annotations

import os
from pathlib import Path

from proxyworker.audit.spool import SPOOL_DROPPED, Spool


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
