"""``make conformance``: run third-party driver test suites once directly against PostgreSQL
and once through a worker per pool mode, then compare (docs/conformance.md).

- asyncpg: the ``tests/`` of its sdist (the version pinned in requirements/dev.txt, fetched
  with ``pip download``), run in its own virtualenv. Its harness uses an existing server when
  ``PGHOST`` is set (``asyncpg._testbase._init_default_cluster`` -> ``RunningCluster``) and
  then connects with the libpq environment variables.
- psycopg: its tests live only in its source repository; give a checkout with
  ``PSYCOPG_SRC=/path/to/psycopg``. Its harness connects to ``PSYCOPG_TEST_DSN``.

Every run gets a fresh private cluster (tests/support/pgcluster.py), so one run's leftovers
cannot fail the next; proxied runs get a worker started from a TOML written here. Results
land in ``build/conformance/`` (per run: pytest.log, outcomes.jsonl, the worker's config and
log; overall: report.md). Exit status: 0 when every test that passes directly also passes
through the worker or is a known difference (known_differences.toml), 1 otherwise, 2 when
a suite could not be set up. This script never edits the suites it runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conformance import outcomes
from tests.support.certs import make_certificates
from tests.support.net import free_port
from tests.support.pgcluster import PgCluster, create_cluster
from tests.support.worker import ROOT, WorkerProcess

REPO = Path(ROOT)
PLUGIN_DIR = Path(__file__).with_name("plugin")
MODES = ("session", "transaction")
SUPERUSER = "postgres"
WORKER_PASSWORD = "conformance-secret"
# Leaked from the caller's shell these would redirect or alter the suites' connections.
_SCRUBBED_ENV = re.compile(r"^(PG|PSYCOPG_|ASYNCPG_|VIRTUAL_ENV$|PYTHONPATH$|PYTEST_)")


class SetupError(Exception):
    """A suite could not be prepared (download, virtualenv, missing checkout)."""


def pinned(package: str) -> str:
    """The version requirements/dev.txt pins for ``package``."""
    for line in (REPO / "requirements" / "dev.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.split("#")[0].strip()
    raise SetupError(f"requirements/dev.txt pins no version of {package}")


@dataclass(frozen=True)
class Target:
    """Where a run connects: the cluster itself (no password) or a worker."""

    port: int
    password: str | None


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    python: Path
    cwd: Path
    pytest_args: tuple[str, ...]
    databases: tuple[str, ...]
    """Databases the suite connects to; the worker serves each under its own name."""
    create: tuple[str, ...]
    """Those of them that must exist before the run (the others the suite creates itself)."""
    modes: tuple[str, ...]
    """Pool modes run when --mode is not given."""
    env: Callable[[Target], dict[str, str]]


@dataclass
class Run:
    mode: str
    outcomes: dict[str, outcomes.Outcome]
    seconds: float
    exit_code: int | None
    """None when the run was killed (see ``killed``)."""
    killed: str = ""
    """Why the run was cut short: the run timeout, or no test finishing for too long."""


# --- preparing the suites -----------------------------------------------------------------


def _check_call(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(f"{what} failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")


def ensure_venv(path: Path, requirements: list[str], stamp: str = "") -> Path:
    """A virtualenv with exactly these requirements installed; reused while they match."""
    python = path / "bin" / "python"
    marker = path / ".sqlproxy-requirements"
    wanted = "\n".join([*requirements, stamp])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    shutil.rmtree(path, ignore_errors=True)
    print(f"  creating {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    _check_call([sys.executable, "-m", "venv", str(path)], "creating a virtualenv")
    _check_call(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        "pip install",
    )
    marker.write_text(wanted)
    return python


def asyncpg_tests(workdir: Path, version: str) -> Path:
    """The asyncpg sdist's ``tests/`` unpacked under ``workdir``; returns its parent."""
    base = workdir / "asyncpg"
    src = base / f"asyncpg-{version}"
    if not (src / "tests" / "__init__.py").exists():
        dist = base / "dist"
        dist.mkdir(parents=True, exist_ok=True)
        _check_call(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--no-binary", ":all:", f"asyncpg=={version}", "-d", str(dist)],
            "downloading the asyncpg sdist",
        )  # fmt: skip
        archive = dist / f"asyncpg-{version}.tar.gz"
        prefix = f"asyncpg-{version}/tests/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(base, members=members, filter="data")
    # An ini file of its own keeps pytest from reading this repository's pyproject.toml.
    # Native tracebacks, as asyncpg's own configuration asks: pytest's source rendering can
    # crash the whole run on CPython 3.11 ("AST constructor recursion depth mismatch").
    (src / "pytest.ini").write_text("[pytest]\naddopts = --tb=native --assert=plain\n")
    return src


def prepare_asyncpg(workdir: Path, test_timeout: int) -> Suite:
    version = pinned("asyncpg")
    src = asyncpg_tests(workdir, version)
    python = ensure_venv(
        workdir / "venv-asyncpg",
        [
            f"asyncpg=={version}",
            "distro",  # imported by tests/test_connect.py
            f"pytest=={pinned('pytest')}",
            f"pytest-timeout=={pinned('pytest-timeout')}",
        ],
    )

    def env(target: Target) -> dict[str, str]:
        values = {
            "PGHOST": "127.0.0.1",  # makes _testbase use the running server
            "PGPORT": str(target.port),
            "PGUSER": SUPERUSER,
            "PGDATABASE": "postgres",
            # The private cluster offers TLS and a worker without tls_cert does not: keep
            # both runs in plain text so that they differ only by the worker.
            "PGSSLMODE": "disable",
        }
        if target.password is not None:
            values["PGPASSWORD"] = target.password
        return values

    return Suite(
        name="asyncpg",
        version=version,
        python=python,
        cwd=src,
        pytest_args=(
            "tests",
            # Lints asyncpg's own source tree (absent from the sdist's tests/): not a driver test.
            "--ignore=tests/test__sourcecode.py",
            # Builds its own primary and standby clusters with pg_ctl (which refuses to run as
            # root) and never connects to PGHOST: nothing a worker could change.
            "--deselect=tests/test_connect.py::TestConnectionAttributes",
            f"--timeout={test_timeout}",
        ),
        databases=("postgres", "testdb", "asyncpg_intro_test"),
        create=(),
        modes=MODES,
        env=env,
    )


def _git_head(src: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else str(time.time())


def prepare_psycopg(workdir: Path, src: Path, test_timeout: int, slow: bool) -> Suite:
    if not (src / "psycopg" / "pyproject.toml").exists() or not (src / "tests").is_dir():
        raise SetupError(f"PSYCOPG_SRC={src} is not a psycopg checkout (psycopg/, tests/)")
    python = ensure_venv(
        workdir / "venv-psycopg",
        [
            f"{src / 'psycopg'}[test]",
            str(src / "psycopg_pool"),
            f"pytest-timeout=={pinned('pytest-timeout')}",
        ],
        stamp=f"{src}@{_git_head(src)}",
    )
    version = subprocess.run(
        [str(python), "-c", "import psycopg; print(psycopg.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    def env(target: Target) -> dict[str, str]:
        dsn = f"host=127.0.0.1 port={target.port} user={SUPERUSER} dbname=psycopg_test"
        if target.password is not None:
            dsn += f" password={target.password}"
        return {
            "PSYCOPG_TEST_DSN": f"{dsn} sslmode=disable",
            # The checkout has no compiled wrapper: the pure-Python one over the system libpq.
            "PSYCOPG_IMPL": "python",
        }

    return Suite(
        name="psycopg",
        version=version,
        python=python,
        cwd=src,
        pytest_args=(
            "tests",
            # The same order in every run, so that runs compare.
            "-p",
            "no:randomly",
            # mypy tests type-check psycopg's own source: not driver tests. Slow tests (gc
            # leak hunts, long waits) take most of an hour on two cores: --slow adds them.
            "-m",
            "not mypy" if slow else "not mypy and not slow",
            f"--timeout={test_timeout}",
        ),
        databases=("psycopg_test",),
        create=("psycopg_test",),
        # The suite changes session settings outside transactions (read-only sessions, for
        # one): under transaction pooling they leak to the next client and most of the
        # suite fails in cascade. --mode transaction still runs it (docs/conformance.md).
        modes=("session",),
        env=env,
    )


# --- running ------------------------------------------------------------------------------


def worker_toml(cluster: PgCluster, port: int, databases: tuple[str, ...], mode: str) -> str:
    blocks = "".join(
        f"""
[[databases]]
name = "{db}"
upstream = "postgresql://{SUPERUSER}@127.0.0.1:{cluster.port}/{db}?sslmode=disable"
pool_mode = "{mode}"
pool_size = 100
"""
        for db in databases
    )
    return f"""# Written by tests/conformance/run.py for one {mode}-mode run.
[listen]
host = "127.0.0.1"
port = {port}

[admin]
port = -1

[logging]
format = "json"
level = "info"

[[users]]
name = "{SUPERUSER}"
password = "{WORKER_PASSWORD}"

# The suites call pg_sleep, SET ROLE and the like on purpose: the comparison measures the
# wire protocol and pooling, not the policy (docs/conformance.md).
[signatures]
enabled = false
{blocks}"""


def _wait(proc: subprocess.Popen[bytes], results: Path, run_timeout: int, stall: int) -> str:
    """Wait for the suite; return why it had to be killed, or "" if it exited.

    A stall is no test finishing for ``stall`` seconds: pytest-timeout fails a hung test,
    but not a fixture teardown that then hangs on the same connection.
    """
    started = last_change = time.monotonic()
    size = -1
    while proc.poll() is None:
        now = time.monotonic()
        current = results.stat().st_size if results.exists() else 0
        if current != size:
            size, last_change = current, now
        if now - started > run_timeout:
            return f"killed after --run-timeout {run_timeout}s"
        if now - last_change > stall:
            return f"killed: no test finished for --stall-timeout {stall}s"
        time.sleep(1)
    return ""


def run_suite(
    suite: Suite,
    mode: str,
    rundir: Path,
    limits: tuple[int, int],
    extra: list[str],
    deselect: list[str],
) -> Run:
    """One run of ``suite`` in ``mode`` ("direct" or a pool mode) on a fresh cluster.

    ``limits`` is (run timeout, stall timeout) in seconds; ``deselect`` lists node ids not
    to run (known hangs in this mode).
    """
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    results = rundir / "outcomes.jsonl"
    cluster = create_cluster(make_certificates())
    worker: WorkerProcess | None = None
    try:
        with cluster.connect("postgres") as conn:
            for db in suite.create:
                conn.execute(f'CREATE DATABASE "{db}"')
        target = Target(cluster.port, None)
        if mode != "direct":
            port = free_port()
            config = rundir / "sqlproxy.toml"
            config.write_text(worker_toml(cluster, port, suite.databases, mode))
            worker = WorkerProcess(str(config), port, -1).start()
            target = Target(port, WORKER_PASSWORD)
        env = {k: v for k, v in os.environ.items() if not _SCRUBBED_ENV.match(k)}
        env |= suite.env(target)
        env |= {"PYTHONPATH": str(PLUGIN_DIR), "SQLPROXY_OUTCOMES": str(results)}
        cmd = [str(suite.python), "-m", "pytest", "-p", "sqlproxy_outcomes", "-q", "-rN"]
        # A cache of its own per run: psycopg's conftest refuses to run after a run that was
        # killed (it takes that for a segfault).
        cmd += ["-o", f"cache_dir={rundir / '.pytest_cache'}", *suite.pytest_args, *extra]
        cmd += [f"--deselect={nodeid}" for nodeid in deselect]
        started = time.monotonic()
        with (rundir / "pytest.log").open("w") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, cwd=suite.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            try:
                killed = _wait(proc, results, *limits)
            finally:  # also on Ctrl-C or SIGTERM: never leave the suite running
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)  # the suite's group, started above
                    proc.wait()
            if killed:
                log.write(f"\nsqlproxy conformance: {killed}\n")
        code = None if killed else proc.returncode
        seconds = time.monotonic() - started
        return Run(mode, outcomes.load(results), seconds, code, killed)
    finally:
        if worker is not None:
            worker.stop()
        cluster.destroy()


# --- reporting ----------------------------------------------------------------------------


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def report(suite: Suite, runs: list[Run], known: list[outcomes.KnownDifference]) -> list[str]:
    lines = [f"## {suite.name} {suite.version}", ""]
    lines += ["| run | passed | failed | errors | skipped | xfailed | tests | seconds | exit |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        c = outcomes.counts(run.outcomes)
        code = run.killed or str(run.exit_code)
        lines.append(
            f"| {run.mode} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} | "
            f"{c['xfailed']} | {sum(c.values())} | {run.seconds:.0f} | {code} |"
        )
    direct = runs[0].outcomes
    for run in runs[1:]:
        cmp = outcomes.compare(suite.name, run.mode, direct, run.outcomes, known)
        lines += [
            "",
            f"### {run.mode} mode: {len(cmp.regressions)} test(s) pass directly but not "
            f"through the worker ({len(cmp.new)} new, "
            f"{len(cmp.regressions) - len(cmp.new)} known)",
            "",
        ]
        for r in cmp.regressions:
            tag = "NEW" if r.known is None else "known"
            lines.append(f"- [{tag}] `{r.nodeid}` ({r.status})")
            if r.message:
                lines.append(_indent(r.message))
        if cmp.not_run:
            lines += ["", f"Not run through the worker ({len(cmp.not_run)}):"]
            lines += [f"- `{n}`" for n in cmp.not_run]
        if cmp.fixed:
            lines += ["", "Known differences that now pass (remove them from the list):"]
            lines += [f"- `{n}`" for n in cmp.fixed]
        if cmp.lucky:
            lines += ["", "Intermittent known differences that passed this time (keep them):"]
            lines += [f"- `{n}`" for n in cmp.lucky]
    failing_direct = sorted(n for n, o in direct.items() if o.status in ("failed", "error"))
    if failing_direct:
        lines += ["", f"Failing directly, so not compared ({len(failing_direct)}):"]
        for n in failing_direct:
            first = direct[n].message.splitlines()[0] if direct[n].message else ""
            lines.append(f"- `{n}`: {first}")
    return [*lines, ""]


def _ok(suite: Suite, runs: list[Run], known: list[outcomes.KnownDifference]) -> bool:
    # pytest exits 0 (all passed) or 1 (some failed); anything else means the run broke.
    if any(run.exit_code not in (0, 1) for run in runs):
        return False
    direct = runs[0].outcomes
    if not direct:
        return False
    for run in runs[1:]:
        cmp = outcomes.compare(suite.name, run.mode, direct, run.outcomes, known)
        if cmp.new or cmp.not_run:
            return False
    return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C, so the suite, the worker and the cluster are cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(prog="scripts/conformance.sh", description=__doc__)
    parser.add_argument(
        "--suite", action="append", choices=("asyncpg", "psycopg"), help="default: both"
    )
    parser.add_argument("--mode", action="append", choices=MODES, help="default: both")
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "conformance")
    parser.add_argument("--test-timeout", type=int, default=60, help="seconds per test")
    parser.add_argument("--run-timeout", type=int, default=1200, help="seconds per run")
    parser.add_argument(
        "--stall-timeout", type=int, default=150, help="seconds without a test finishing"
    )
    parser.add_argument("--slow", action="store_true", help="include psycopg's slow tests")
    parser.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments for every run (after --)"
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    known = outcomes.known_differences()
    ok = True
    sections = ["# Conformance report", ""]
    for name in args.suite or ("asyncpg", "psycopg"):
        print(f"== {name}", flush=True)
        try:
            if name == "asyncpg":
                suite = prepare_asyncpg(workdir, args.test_timeout)
            else:
                src = os.environ.get("PSYCOPG_SRC")
                if not src:
                    message = (
                        "psycopg: skipped, PSYCOPG_SRC is not set (its tests are only in its "
                        "source repository: PSYCOPG_SRC=/path/to/psycopg make conformance)"
                    )
                    print(message)
                    sections += ["## psycopg", "", message, ""]
                    continue
                suite = prepare_psycopg(workdir, Path(src).resolve(), args.test_timeout, args.slow)
        except SetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        runs = []
        for mode in ["direct", *(args.mode or suite.modes)]:
            print(f"  {mode} ...", end=" ", flush=True)
            skip = [
                t.rstrip("*")  # pytest deselects node id prefixes
                for k in known
                if k.deselect and k.suite == name and mode in k.modes
                for t in k.tests
            ]
            run = run_suite(
                suite,
                mode,
                workdir / name / mode,
                (args.run_timeout, args.stall_timeout),
                args.pytest_args,
                skip,
            )
            c = outcomes.counts(run.outcomes)
            print(", ".join(f"{n} {s}" for s, n in sorted(c.items())) + f" ({run.seconds:.0f}s)")
            runs.append(run)
        section = report(suite, runs, known)
        sections += section
        print("\n".join(section), flush=True)
        ok = _ok(suite, runs, known) and ok
    (workdir / "report.md").write_text("\n".join(sections))
    print(f"report: {workdir / 'report.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
