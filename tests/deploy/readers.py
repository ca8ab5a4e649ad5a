"""How ``tests/deploy`` reads the deployment files and what the sources say about them.

Small readers, each for what the tests need and no more: the Dockerfile's stages and
instructions, ``.dockerignore`` matching, compose's variable interpolation, the chart's values
and its plain ``{{ .Values.x }}`` references; and the environment variables the control plane's
settings read, found in the settings' own source.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yml"
CHART = DEPLOY / "helm" / "sqlproxy"
TEMPLATES = CHART / "templates"


def settings_environment() -> tuple[set[str], set[str]]:
    """(every variable the control plane's settings read, the secrets among them), from the
    calls to the ``env_*`` helpers of ``controlplane/settings/env.py``; a helper that also
    reads ``NAME_FILE`` makes its variable a secret."""
    env_source = (ROOT / "controlplane" / "settings" / "env.py").read_text()
    helpers: dict[str, bool] = {}
    for definition in ast.parse(env_source).body:
        if isinstance(definition, ast.FunctionDef) and definition.name.startswith("env_"):
            source = ast.get_source_segment(env_source, definition) or ""
            helpers[definition.name] = "_FILE" in source or "env_secret(" in source
    names: set[str] = set()
    secrets: set[str] = set()
    for path in (ROOT / "controlplane" / "settings").glob("*.py"):
        if path.name == "env.py":
            continue  # (the helpers themselves, calling one another)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in helpers or not node.args:
                continue
            first = node.args[0]
            assert isinstance(first, ast.Constant), f"{path.name}: {ast.unparse(node)}"
            assert isinstance(first.value, str), f"{path.name}: {ast.unparse(node)}"
            names.add(first.value)
            if helpers[node.func.id]:
                names.add(f"{first.value}_FILE")
                secrets.add(first.value)
    assert {"DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY_FILE"} <= names, names
    return names, secrets


def required_secrets() -> set[str]:
    """The secrets a running control plane refuses to start without: those that
    ``controlplane/settings/runtime.py`` names in its ``... is required`` errors."""
    runtime = (ROOT / "controlplane" / "settings" / "runtime.py").read_text()
    required = set(re.findall(r'"(\w+) \(or \w+_FILE\) is required', runtime))
    _, secrets = settings_environment()
    assert required and required <= secrets, (required, secrets)
    return required


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)


def dockerfile() -> dict[str, Stage]:
    """Stages by name (in order), each with its instructions; ARGs before the first FROM
    resolved in the base images."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lines.append(pending)
        pending = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        op, _, rest = line.strip().partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            parts = re.split(r"\s+as\s+", rest, flags=re.I)
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[1] if len(parts) > 1 else f"stage-{len(stages)}"
            current = stages[name] = Stage(name, base)
        else:
            assert current is not None, f"{op} before FROM"
            current.steps.append((op, rest))
    return stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """``name`` and the stages it is built FROM, base first."""
    line = [stages[name]]
    while line[0].base in stages:
        line.insert(0, stages[line[0].base])
    return line


def copy_sources(rest: str) -> tuple[str | None, list[str]]:
    """(its --from stage or None, its sources) of a COPY instruction."""
    words = shlex.split(rest)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    return flags.get("from"), [w for w in words if not w.startswith("--")][:-1]


def copies(stages: list[Stage]) -> Iterator[tuple[str | None, list[str]]]:
    for stage in stages:
        for op, rest in stage.steps:
            if op == "COPY":
                yield copy_sources(rest)


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out: .dockerignore patterns (``*``, ``?``,
    ``**``, ``!``) match a path or one of its parent directories."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = ""
        pattern = pattern.lstrip("!").strip("/")
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] in "*?":
                regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        parts = path.strip("/").split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


# --- compose.yml ----------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[?-])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op and "?" in op:
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return _VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


# --- the Helm chart ----------------------------------------------------------------------------


def values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def lookup(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        assert isinstance(node, dict) and key in node, f".Values.{path} is not in values.yaml"
        node = node[key]
    return node


def template_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(TEMPLATES.iterdir()) if p.is_file()}


def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def render_value_references(text: str) -> str:
    """``{{ .Values.a.b }}`` and ``{{ .Values.a.b | quote }}`` from values.yaml; anything
    else a template does is beyond this test, so it must not appear in ``text``."""

    def value(match: re.Match[str]) -> str:
        found = lookup(values(), match.group(1))
        return json.dumps(str(found)) if match.group(2) else str(found)

    out = re.sub(r"\{\{-?\s*\.Values\.([\w.]+)\s*(\|\s*quote\s*)?-?\}\}", value, text)
    assert "{{" not in out, f"more than value references: {out}"
    return out


def block(text: str, key: str) -> str:
    """The lines of the first ``key:`` block (those indented deeper than the key)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return "\n".join(body)
