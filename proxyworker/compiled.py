"""Which of the worker's modules run compiled, and whether that build still matches them.

The relay's hot path (framing, response tracking, the session, pooling, the gate's remembered
verdicts) is compiled with mypyc by ``make build`` (``setup.py``): each module listed in
``SOURCES`` gets a C extension next to its ``.py``, which Python imports instead. The source
stays the one truth: the same modules run interpreted when nothing is built.

A build that no longer matches its sources would run old code in place of the file being
read, so ``check`` (called when the package is imported) refuses it with the way out.
This module imports nothing of the package: ``setup.py`` reads ``SOURCES`` from it.
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

SOURCES = (
    "protocol/framing.py",
    "protocol/messages.py",
    "protocol/tracker.py",
    "session/state.py",
    "session/pooling.py",
    "session/guarded.py",
    "session/responses.py",
    "session/requests.py",
    "session/handshake.py",
    "session/client.py",
    "upstream/connection.py",
    "upstream/pool.py",
    "server.py",
    "guard/gate.py",
    "guard/catalog.py",
    "guard/rewrite.py",
    "policy/decision.py",
    "policy/engine.py",
    "policy/tables.py",
    "analysis/shapes.py",
    "metrics.py",
    "prepared.py",
    "reuse.py",
    "clocks.py",
)
"""Compiled modules, relative to the package."""

C_SOURCES = ("_reactor.c", "_scan.c")
"""Extensions written in C (``setup.py`` builds them beside the compiled modules)."""

BUILT = SOURCES + C_SOURCES
"""Every source ``make build`` turns into an extension: what the manifest and ``check`` cover."""

MANIFEST = "compiled.json"
"""Written by ``setup.py`` next to this file: the SHA-256 of each source it compiled."""

PACKAGE = Path(__file__).resolve().parent


class StaleBuild(ImportError):
    """A compiled module was built from another version of its source."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extension(source: Path) -> Path | None:
    stem = source.with_suffix("")
    for suffix in EXTENSION_SUFFIXES:
        built = stem.with_name(stem.name + suffix)
        if built.exists():
            return built
    return None


def write_manifest(package: Path = PACKAGE) -> None:
    """Record the sources just compiled (``setup.py``, after a build)."""
    digests = {source: _digest(package / source) for source in BUILT}
    (package / MANIFEST).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def check(package: Path = PACKAGE) -> bool:
    """True when the modules in ``SOURCES`` run compiled (and ``C_SOURCES`` are built), False
    when they run interpreted; raises ``StaleBuild`` when a source changed since it was built."""
    built = [source for source in BUILT if _extension(package / source) is not None]
    if not built:
        return False
    try:
        digests = json.loads((package / MANIFEST).read_text())
    except (OSError, ValueError):
        digests = {}
    stale = [source for source in built if digests.get(source) != _digest(package / source)]
    missing = [source for source in BUILT if source not in built]
    if stale or missing:
        changed = ", ".join(f"proxyworker/{source}" for source in stale + missing)
        raise StaleBuild(
            f"the compiled worker does not match its sources ({changed}): run `make build` "
            "to compile them again, or `make clean-build` to run them interpreted"
        )
    return True
