"""Compiles the worker's hot path with mypyc: ``make build`` (part of ``make run``, ``make test``
and ``make bench``).

The modules listed in ``proxyworker/compiled.py`` are type-checked Python; mypyc turns them
into one C extension (``proxyworker__mypyc``) with a small shim module next to each source
file, which Python imports in place of the ``.py``. Nothing else changes: the same source runs
interpreted when it is not built (``make clean-build``), and ``proxyworker.compiled`` refuses
to import a build that no longer matches its sources.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
# Read without importing the package (which checks the build this makes).
compiled = runpy.run_path(str(ROOT / "proxyworker" / "compiled.py"))
sources = [f"proxyworker/{module}" for module in compiled["SOURCES"]]

# Hand-written C (proxyworker/_reactor.c: the sockets' epoll reactor; _scan.c: byte scans),
# built beside them.
handwritten = [
    Extension(
        "proxyworker." + Path(source).stem,
        [f"proxyworker/{source}"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    )
    for source in compiled["C_SOURCES"]
]

setup(
    packages=[],
    ext_modules=[
        *mypycify(sources, opt_level="3", group_name="proxyworker", target_dir="build/mypyc"),
        *handwritten,
    ],
)
if "build_ext" in sys.argv:
    compiled["write_manifest"](ROOT / "proxyworker")
