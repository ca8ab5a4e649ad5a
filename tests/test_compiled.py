"""The compiled hot path (``proxyworker/compiled.py``): a build is used only while it matches
its sources, the suite runs against the build ``make test`` made, and the compiled modules
keep to what mypyc compiles correctly (``docs/compiled.md``)."""

from __future__ import annotations

import ast
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import proxyworker
from proxyworker import compiled
from proxyworker.compiled import (
    BUILT,
    C_SOURCES,
    MANIFEST,
    SOURCES,
    StaleBuild,
    check,
    write_manifest,
)

SUFFIX = EXTENSION_SUFFIXES[0]


def package(tmp_path: Path) -> Path:
    """A package tree with every compiled module's source and no build."""
    for source in BUILT:
        path = tmp_path / source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {source}\n")
    return tmp_path


def build(root: Path, sources: tuple[str, ...] = BUILT) -> None:
    """What ``make build`` leaves: an extension beside each source, and the manifest."""
    for source in sources:
        (root / source).with_suffix(SUFFIX).write_bytes(b"\x7fELF")
    write_manifest(root)


def test_it_runs_interpreted_when_nothing_is_built(tmp_path: Path) -> None:
    assert check(package(tmp_path)) is False


def test_it_runs_compiled_when_the_build_matches_its_sources(tmp_path: Path) -> None:
    root = package(tmp_path)
    build(root)
    assert check(root) is True


def test_it_refuses_a_build_whose_source_changed_since(tmp_path: Path) -> None:
    root = package(tmp_path)
    build(root)
    (root / "session/requests.py").write_text("# edited after the build\n")
    with pytest.raises(StaleBuild, match=r"proxyworker/session/requests\.py\).*make build"):
        check(root)
    build(root)
    (root / "_reactor.c").write_text("/* edited after the build */\n")
    with pytest.raises(StaleBuild, match=r"proxyworker/_reactor\.c\)"):
        check(root)


def test_it_refuses_a_build_that_lacks_a_module_or_its_manifest(tmp_path: Path) -> None:
    root = package(tmp_path)
    build(root, SOURCES[:-1] + C_SOURCES)
    with pytest.raises(StaleBuild, match=SOURCES[-1]):
        check(root)
    build(root)
    (root / C_SOURCES[0]).with_suffix(SUFFIX).unlink()
    with pytest.raises(StaleBuild, match=C_SOURCES[0]):
        check(root)
    build(root)
    (root / MANIFEST).unlink()
    with pytest.raises(StaleBuild, match="make clean-build"):
        check(root)


@pytest.mark.skipif(
    not os.environ.get("SQLPROXY_EXPECT_COMPILED"),
    reason="`make test` sets SQLPROXY_EXPECT_COMPILED: the suite must test the compiled build",
)
def test_the_suite_runs_against_the_compiled_worker() -> None:
    assert proxyworker.COMPILED
    from proxyworker import sockets
    from proxyworker.session import requests

    assert requests.__file__.endswith(".so")
    assert sockets.Reactor is not None


def _except_names_of_several_types(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            types: dict[str, set[str]] = {}
            for handler in ast.walk(node):
                if isinstance(handler, ast.ExceptHandler) and handler.name and handler.type:
                    types.setdefault(handler.name, set()).add(ast.unparse(handler.type))
            found += [f"{path.name}:{node.name}:{n}" for n, t in types.items() if len(t) > 1]
    return found


def test_it_finds_two_kinds_of_exception_named_alike(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "async def f():\n"
        "    try:\n        pass\n    except KeyError as exc:\n        pass\n"
        "    except ValueError as exc:\n        pass\n"
    )
    assert _except_names_of_several_types(sample) == ["sample.py:f:exc"]


def test_no_compiled_function_names_two_kinds_of_exception_alike() -> None:
    # Compiled, ``except A as exc: ... except B as exc:`` types ``exc`` as A: a B raises
    # TypeError in the handler (seen: a malformed startup packet left the client waiting).
    root = Path(compiled.__file__).parent
    assert [f for s in SOURCES for f in _except_names_of_several_types(root / s)] == []
