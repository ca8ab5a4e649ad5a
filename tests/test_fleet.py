"""The worker's side of the fleet contract, without Redis: the snapshot kept on disk, the
quantiles a heartbeat reports, what the logs may show of a Redis URL, and a URL file that
cannot be used.
(``tests/integration/test_fleet.py`` drives real workers through a real Redis.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proxyworker.__main__ import main
from proxyworker.config import fleet, loads
from proxyworker.fleet import SnapshotFile, quantile, redacted


def snapshot(version: int) -> bytes:
    config = loads('[[users]]\nname = "app"\npassword = "pw"\n')
    return fleet.encode_snapshot(
        fleet.ConfigSnapshot(version=version, created=time.time(), config=config)
    )


def test_it_keeps_the_newest_snapshot_on_disk(tmp_path: Path) -> None:
    store = SnapshotFile(str(tmp_path / "state"))
    assert store.load() is None
    assert store.save(snapshot(3), 3)
    assert not store.save(snapshot(2), 2)  # another process was quicker with a newer one
    loaded = store.load()
    assert loaded is not None and loaded[0].version == 3
    assert store.save(snapshot(4), 4)
    assert [p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".tmp"] == []


def test_it_ignores_an_unreadable_snapshot_file(tmp_path: Path) -> None:
    (tmp_path / "snapshot.json").write_bytes(b'{"version": 1, "created": 0, "config": {"x": 1}}')
    store = SnapshotFile(str(tmp_path))
    assert store.load() is None
    assert store.save(snapshot(1), 1)  # and replaces it
    assert store.load() is not None


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.001 + 0.004 * 10 / 60), (0.99, 0.001 + 0.004 * 59 / 60), (1.0, 0.005)],
)
def test_quantiles_interpolate_inside_the_bucket(q: float, expected: float) -> None:
    # 100 observations: 40 up to 1 ms, 60 between 1 and 5 ms.
    buckets = {0.001: 40.0, 0.005: 100.0, float("inf"): 100.0}
    assert quantile(q, buckets) == pytest.approx(expected)


def test_quantiles_of_nothing_are_none() -> None:
    assert quantile(0.5, {0.001: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.5, {}) is None


def test_a_quantile_beyond_the_last_bound_is_that_bound() -> None:
    assert quantile(0.99, {0.001: 1.0, 30.0: 1.0, float("inf"): 10.0}) == 30.0


def test_logs_never_show_the_redis_password() -> None:
    assert redacted("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted("rediss://worker:s3cret@cache/0") == "rediss://worker:***@cache/0"
    assert redacted("redis://cache:6379/0") == "redis://cache:6379/0"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "cannot read"),
        ("", "must hold one URL, on one line"),
        ("redis://a:6379/0\nredis://b:6379/0\n", "must hold one URL, on one line"),
    ],
    ids=["missing", "empty", "two lines"],
)
def test_a_url_file_that_cannot_be_used_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, error: str
) -> None:
    path = tmp_path / "redis-url"
    if content is not None:
        path.write_text(content)
    assert main(["--control-plane-file", str(path), "--worker-id", "w1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --control-plane-file: ") and error in err and str(path) in err


def test_an_unset_url_variable_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLPROXY_TEST_UNSET", raising=False)
    assert main(["--control-plane-env", "SQLPROXY_TEST_UNSET", "--worker-id", "w1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --control-plane-env: SQLPROXY_TEST_UNSET is not set\n"
