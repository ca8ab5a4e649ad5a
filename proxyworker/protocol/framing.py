"""Cutting a byte stream into complete protocol messages, without copying what is whole.

``Framer.feed`` returns ``(kind, view)`` pairs whose views point into the bytes just received:
a chunk made of whole messages is never copied. Only a partial message at the end of a chunk is
kept (copied) until the rest arrives. Messages of a *pass-through* kind (DataRow, CopyData)
larger than ``passthrough_min`` are not buffered at all: their pieces are returned as they
arrive, the first with the message's kind and the rest as ``CONTINUATION``, so a 500 MB row is
relayed in constant memory.

Sizes are capped: a declared length over ``max_size`` (or under 4) is a protocol violation and
raises ``MalformedMessage``; the caller answers 08P01 and closes.

``Framer.frames`` is the relay's shortcut before ``feed``: for a chunk made of whole messages
of the kinds the framer was made to take whole (``accepting``), each message's kind and first
body byte, in one call into C (``scan.Frames``), so the common chunk is forwarded as it came
without a view or a list made for it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from mypy_extensions import i64

from proxyworker import scan
from proxyworker.protocol.messages import MalformedMessage

CONTINUATION: Final = -1
"""Kind of a piece of a pass-through message after its first piece."""

_LEN: Final = struct.Struct("!i")
_EMPTY: Final = memoryview(b"")


class Framer:
    __slots__ = (
        "_buf",
        "_frames",
        "_max",
        "_min_passthrough",
        "_passthrough",
        "_skip",
        "aligned",
    )

    def __init__(
        self,
        max_size: int,
        passthrough: frozenset[int] = frozenset(),
        passthrough_min: int = 65536,
        whole: bytes = bytes(256),
    ) -> None:
        self._buf = b""
        self._skip = 0
        self._max = max_size
        self._frames: Callable[[bytes], bytes | None] = scan.Frames(max_size, whole)
        """``frames``' scan: ``whole`` is the kinds it accepts (``accepting``)."""
        self._passthrough = passthrough
        self._min_passthrough = passthrough_min
        self.aligned = True
        """True when the last ``feed`` returned exactly the chunk, cut at message borders."""

    def whole_messages_only(self) -> None:
        """Stop passing large messages through in pieces (their content must be inspected)."""
        self._passthrough = frozenset()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)

    def frames(self, data: bytes) -> bytes | None:
        """When ``data`` is made of whole messages of the kinds the framer was made to take
        (``whole``) and nothing is held back: two bytes per message, its kind and the first
        byte of its body (``scan.Frames``, one call for the chunk). Otherwise None, and
        nothing changes (``feed`` then does the work, and reports what is malformed)."""
        if len(self._buf) or self._skip:
            return None
        found = self._frames(data)
        if found is not None:
            self.aligned = True
        return found

    def feed(self, data: bytes) -> list[tuple[int, memoryview]]:
        out: list[tuple[int, memoryview]] = []
        view = memoryview(data)
        aligned = not self._buf and not self._skip
        if self._skip:
            take = min(self._skip, len(view))
            out.append((CONTINUATION, view[:take]))
            self._skip -= take
            view = view[take:]
        if self._buf:
            view = memoryview(self._buf + view.tobytes())
            self._buf = b""
        pos = 0
        n = len(view)
        while n - pos >= 5:
            kind = view[pos]
            length = _LEN.unpack_from(view, pos + 1)[0]
            if length < 4 or length > self._max:
                raise MalformedMessage(
                    f"message {chr(kind)!r} declares {length} bytes; the limit is {self._max}"
                )
            end = pos + 1 + length
            if end <= n:
                out.append((kind, view[pos:end]))
                pos = end
                continue
            if kind in self._passthrough and length >= self._min_passthrough:
                out.append((kind, view[pos:]))
                self._skip = end - n
                pos = n
            break
        if pos < n:
            self._buf = view[pos:].tobytes()
            aligned = False
        elif self._skip:
            aligned = False
        self.aligned = aligned
        return out


def following(data: bytes, start: i64) -> i64:
    """Where the message after the one at ``start`` starts, in a chunk ``Framer.frames``
    accepted (its lengths are known to be sound)."""
    length: i64 = i64(data[start + 1]) << 24 | i64(data[start + 2]) << 16
    return start + 1 + (length | i64(data[start + 3]) << 8 | i64(data[start + 4]))


def accepting(kinds: Iterable[int], longer: Mapping[int, int] | None = None) -> bytes:
    """What a ``Framer`` takes ``whole`` (``scan.Frames``' table): ``kinds`` accepted, each
    message at least its 5-byte header long, or as long as ``longer`` says for its kind."""
    longer = longer or {}
    accepted = set(kinds)
    return bytes(longer.get(kind, 5) if kind in accepted else 0 for kind in range(256))


def body(msg: memoryview) -> memoryview:
    """The body of a whole framed message (after type and length)."""
    return msg[5:]
