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


def _dotted(tokens: list[str | int]) -> str | None:
    out = ""
    for tok in tokens:
        out += f"[{tok}]" if isinstance(tok, int) else (f".{tok}" if out else tok)
    return out or None


def _unquote(key: str) -> str:
    return key[1:-1] if key[:1] in "\"'" else key


def _locate(text: str, tokens: list[str | int]) -> int | None:
    """Best line for a msgspec path: the key's line, else its table's header line."""
    # The table part of the path: leading names, with an index after an array of tables.
    table: list[str] = []
    index = 0
    rest = list(tokens)
    while rest:
        head = rest.pop(0)
        if isinstance(head, int):
            index = head
            continue
        table.append(head)
        if rest and isinstance(rest[0], int):
            index = int(rest.pop(0))
            break
        if not rest or not _has_header(text, table):
            break
    key = next((t for t in rest if isinstance(t, str)), None)
    if key is None and tokens and isinstance(tokens[-1], str) and len(table) > 1:
        key = table.pop()
    seen = -1
    header_line: int | None = None
    in_table = not table or (len(table) == 1 and not _has_header(text, table))
    if in_table and table:  # a top-level key
        key, table = table[0], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = ".".join(_unquote(p.strip()) for p in header.group(2).split("."))
            in_table = False
            if name == ".".join(table):
                seen += 1
                if seen == index or header.group(1) == "[":
                    in_table, header_line = True, lineno
            continue
        keymatch = _KEY.match(line)
        if in_table and key is not None and keymatch and _unquote(keymatch.group(1)) == key:
            return lineno
    return header_line


def _has_header(text: str, table: list[str]) -> bool:
    wanted = ".".join(table)
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header and ".".join(_unquote(p.strip()) for p in header.group(2).split(".")) == wanted:
            return True
    return False
