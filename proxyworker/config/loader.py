"""Reading the worker configuration from TOML, with errors that point at file, line and key.

``tomllib`` reports syntax errors with a line; msgspec reports schema errors with a path such
as ``$.databases[1].pool_mode``. ``_locate`` maps that path back to the line that holds the key
(or the table header, for a missing key), so every error reads ``file:line: key: message``.
"""

from __future__ import annotations

import os
import re
import tomllib

import msgspec

from proxyworker.config.schema import WorkerConfig


class ConfigError(Exception):
    def __init__(self, path: str, line: int | None, key: str | None, message: str) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_MSGSPEC_PATH = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_FIELD_ERROR = re.compile(r"^`(\w+)`: (.*)$", re.S)
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=""")


def loads(text: str, path: str = "<config>") -> WorkerConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(path, line, None, _TOML_LINE.sub("", str(exc)).strip()) from None
    try:
        config = msgspec.convert(raw, WorkerConfig)
    except msgspec.ValidationError as exc:
        match = _MSGSPEC_PATH.match(str(exc))
        assert match is not None
        message, at = match.group(1), match.group(2) or ""
        if at.endswith("[...]"):  # a value in a table of free keys: find which one
            at = at[:-5] + _bad_entry(raw, at[:-5], message)
        tokens: list[str | int] = [
            name if name else int(index) for name, index in _PATH_TOKEN.findall(at)
        ]
        unknown = re.search(r"unknown field `([^`]+)`", message)
        if unknown:  # point at the stray key itself
            tokens.append(unknown.group(1))
        field = _FIELD_ERROR.match(message)
        if field:  # a check in the schema's __post_init__ names its key
            tokens.append(field.group(1))
            message = field.group(2)
        missing = re.search(r"missing required field `([^`]+)`", message)
        key_tokens = [*tokens, missing.group(1)] if missing else tokens
        raise ConfigError(path, _locate(text, tokens), _dotted(key_tokens), message) from None
    return config.resolve_paths(os.path.dirname(os.path.abspath(path)))


def load_file(path: str) -> WorkerConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(path, None, None, exc.strerror or str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, None, f"not UTF-8: {exc.reason}") from None
    return loads(text, path)


_EXPECTED: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "str": str,
    "float": (int, float),
    "bool": bool,
}


def _bad_entry(raw: object, at: str, message: str) -> str:
    """``.key`` of the first entry of the table at ``at`` whose value has the wrong type."""
    node = raw
    for name, index in _PATH_TOKEN.findall(at):
        node = node[name] if name else node[int(index)]  # type: ignore[index]
    expected = re.match(r"Expected `(\w+)`", message)
    wanted = _EXPECTED.get(expected.group(1) if expected else "", ())
    assert isinstance(node, dict)
    for key, value in node.items():
        if not isinstance(value, wanted) or isinstance(value, bool) is not (wanted is bool):
            return f".{key}"
    return ""


def _dotted(tokens: list[str | int]) -> str | None:
    out = ""
    for tok in tokens:
        out += f"[{tok}]" if isinstance(tok, int) else (f".{tok}" if out else tok)
    return out or None


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


def _locate(text: str, tokens: list[str | int]) -> int | None:
    """Best line for a msgspec path: the key's line, else its table's header line."""
    names = [t for t in tokens if isinstance(t, str)]
    indexes: dict[str, int] = {}  # array of tables (dotted name) -> the element meant
    prefix: list[str] = []
    for tok in tokens:
        if isinstance(tok, int):
            indexes[".".join(prefix)] = tok
        else:
            prefix.append(tok)
    lines = text.splitlines()
    headers = {_header_name(h) for h in map(_HEADER.match, lines) if h}
    table: list[str] = []
    for n in range(len(names), 0, -1):  # the longest leading names that have a header
        if ".".join(names[:n]) in headers:
            table = names[:n]
            break
    key = names[len(table)] if len(names) > len(table) else None
    wanted = ".".join(table)
    counts: dict[str, int] = {}
    in_table, header_line = not table, None
    for lineno, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            name = _header_name(header)
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
            in_table = name == wanted and all(
                counts.get(array, -1) == index
                for array, index in indexes.items()
                if wanted == array or wanted.startswith(array + ".")
            )
            if in_table and header_line is None:
                header_line = lineno
            continue
        keymatch = _KEY.match(line)
        if in_table and key is not None and keymatch and _unquote(keymatch.group(1)) == key:
            return lineno
    return header_line


def _header_name(header: re.Match[str]) -> str:
    return ".".join(_unquote(p.strip()) for p in header.group(2).split("."))
