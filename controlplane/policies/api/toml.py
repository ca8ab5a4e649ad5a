"""``application/toml`` for DRF: a parser that hands the view the text, a renderer that writes
text as it is (and error dictionaries as TOML)."""

from __future__ import annotations

import json
from typing import Any

import tomli_w
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer

MEDIA_TYPE = "application/toml"


class TomlParser(BaseParser):
    media_type = MEDIA_TYPE

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> str:
        try:
            return stream.read().decode("utf-8")  # type: ignore[no-any-return]
        except UnicodeDecodeError as exc:
            raise ParseError(f"TOML must be UTF-8: {exc.reason}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class TomlRenderer(BaseRenderer):
    media_type = MEDIA_TYPE
    format = "toml"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        if isinstance(data, str):
            return data.encode()
        try:
            return tomli_w.dumps(_plain(data)).encode()
        except (TypeError, ValueError):
            return ("# " + json.dumps(data, default=str)).encode()
