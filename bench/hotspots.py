"""Where a worker spends its time: py-spy samples summarized per function, line and package.

``record`` attaches py-spy to a running worker process for a fixed time and writes collapsed
stacks (``--format raw``: ``frame;frame;... count`` with frames as ``func (file:line)``).
``summarize`` turns them into self and inclusive percentages. Idle samples (the event loop
waiting in epoll) are not recorded, so percentages are of the time the worker was busy; time
spent inside uvloop's C code (socket writes, callbacks) is charged to the Python line that
called into it. Nothing here starts or stops the worker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = ".venv/bin/pip install -r bench/requirements.txt  # py-spy, for --profile"

_ROOT = f"{Path(__file__).resolve().parent.parent}/"
_FRAME = re.compile(r"^(?P<func>.+) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def find_py_spy(venv_bin: Path) -> str | None:
    candidate = venv_bin / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def record(
    py_spy: str, pid: int, duration: int, out: Path, rate: int, native: bool
) -> subprocess.Popen[str]:
    """Start sampling ``pid`` for ``duration`` seconds; wait on the returned process.
    ``native`` adds C frames (uvloop, libuv, CPython), to split the event loop's share."""
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(duration)]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out)]
    if native:
        argv.append("--native")
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", _ROOT):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


@dataclass
class Summary:
    total: int = 0
    self_by_function: Counter[str] = field(default_factory=Counter)
    inclusive_by_function: Counter[str] = field(default_factory=Counter)
    self_by_line: Counter[str] = field(default_factory=Counter)
    self_by_package: Counter[str] = field(default_factory=Counter)


def _package(file: str) -> str:
    if file.startswith("proxyworker/"):
        return file
    head = file.split("/", 1)[0]
    if head in ("asyncio", "uvloop", "selectors", "threading"):
        return "event loop (asyncio/uvloop)"
    return head.removesuffix(".py")


def summarize(path: Path) -> Summary:
    summary = Summary()
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for frame in stack.split(";"):
            found = _FRAME.match(frame)
            if found is not None:
                frames.append((found["func"], _short(found["file"]), found["line"]))
        if not frames:
            continue
        summary.total += count
        func, file, line = frames[-1]
        summary.self_by_function[f"{file}:{func}"] += count
        summary.self_by_line[f"{file}:{line} ({func})"] += count
        summary.self_by_package[_package(file)] += count
        for name in {f"{f}:{fn}" for fn, f, _ in frames}:
            summary.inclusive_by_function[name] += count
    return summary


def report(summary: Summary, top: int = 15) -> str:
    if summary.total == 0:
        return "no samples (was the worker busy? is ptrace allowed?)"

    def pct(n: int) -> str:
        return f"{100.0 * n / summary.total:5.1f}%"

    lines = [f"{summary.total} samples while busy", "", "self time by package/file:"]
    lines += [f"  {pct(n)}  {name}" for name, n in summary.self_by_package.most_common(top)]
    lines += ["", "self time by function:"]
    lines += [f"  {pct(n)}  {name}" for name, n in summary.self_by_function.most_common(top)]
    lines += ["", "inclusive time, proxyworker/ and prometheus_client functions:"]
    ours = [
        (name, n)
        for name, n in summary.inclusive_by_function.most_common()
        if name.startswith(("proxyworker/", "prometheus_client/"))
    ]
    lines += [f"  {pct(n)}  {name}" for name, n in ours[:top]]
    lines += ["", "self time by line:"]
    lines += [f"  {pct(n)}  {name}" for name, n in summary.self_by_line.most_common(top)]
    return "\n".join(lines)
