"""The response plane ("call home"): the frames a worker streams back to its caller.

On the call-home connection, in order (each a TwoPart message):

1. handshake, header only: ``{"subject": ..., "stream_type": "response"}``;
2. prologue, header only: ``{"error": null}`` (or an error, and the stream ends);
3. items, body only: ``codec({"data": <item>, "complete_final": false})``;
4. end, body only: ``codec({"complete_final": true})``;
5. sentinel, header only: the JSON string ``"sentinel"``.

The caller may write a header-only ``"stop"`` or ``"kill"`` frame at any time.
:class:`ResponseStreamDecoder` is the caller's side of that state machine and
enforces Dynamo's rules; the ``encode_*`` functions are the worker's side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trioplane._errors import BadArgument, MalformedStream, ProtocolError, StreamIncomplete
from trioplane.wire._json import dump_json, load_json
from trioplane.wire.codecs import PayloadCodec
from trioplane.wire.control import decode_handshake
from trioplane.wire.rejections import REJECTIONS
from trioplane.wire.twopart import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    TwoPartDecoder,
    encode_two_part,
)

__all__ = [
    "Annotated",
    "CANCEL_KILL",
    "CANCEL_STOP",
    "SENTINEL",
    "End",
    "Handshake",
    "Item",
    "NOT_DATA",
    "Prologue",
    "REJECTIONS",
    "Rejected",
    "ResponseEvent",
    "ResponseStreamDecoder",
    "Sentinel",
    "decode_cancel",
    "encode_cancel",
    "encode_end",
    "encode_item",
    "encode_prologue",
    "encode_sentinel",
    "unwrap_annotated",
]

SENTINEL = b'"sentinel"'
CANCEL_STOP = "stop"
CANCEL_KILL = "kill"
_PROLOGUE_OK = b'{"error":null}'


@dataclass(frozen=True)
class Handshake:
    """The worker named the stream it is calling home for."""

    subject: str


@dataclass(frozen=True)
class Prologue:
    """The stream started (``error`` is ``None``) or failed to start (then it is over).

    A failed start may carry Dynamo's typed error object too (``typed_error``).
    """

    error: Any = None
    typed_error: Any = None


@dataclass(frozen=True)
class Annotated:
    """An item with Dynamo's annotations, as a Python worker's stream carries it.

    ``data`` is the item (``None`` for an annotation-only item), ``event`` a name
    (``"error"`` marks an error), ``comment`` lines of text, ``id`` an item id.
    ``generate(..., annotated=True)`` yields these; a handler may yield one to send
    annotations (what Dynamo's client returns with ``annotated=True``).
    """

    data: Any = None
    event: str | None = None
    comment: list[str] | None = None
    id: str | None = None

    def is_error(self) -> bool:
        return self.event == "error"

    def to_wire(self) -> dict[str, Any]:
        """The annotated object in Dynamo's field order (unset fields left out)."""
        wire: dict[str, Any] = {}
        for name in ("data", "id", "event", "comment"):
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        return wire

    @classmethod
    def from_wire(cls, item: Any) -> Annotated:
        """The annotated object a worker sent (anything else is bare data)."""
        if not isinstance(item, Mapping):
            return cls(data=item)
        comment = item.get("comment")
        if isinstance(comment, str):
            comment = [comment]
        return cls(
            data=item.get("data"),
            event=item.get("event") if isinstance(item.get("event"), str) else None,
            comment=list(comment) if isinstance(comment, list) else None,
            id=item.get("id") if isinstance(item.get("id"), str) else None,
        )


@dataclass(frozen=True)
class Item:
    """One response item: the ``data`` of Dynamo's wrapper, still annotated."""

    data: Any


@dataclass(frozen=True)
class End:
    """``complete_final``: the worker finished the stream."""


@dataclass(frozen=True)
class Rejected:
    """The worker shed the request on the stream itself (``Server overloaded: ...``)."""

    text: str


@dataclass(frozen=True)
class Sentinel:
    """The worker's last frame; the caller should close the connection now."""


ResponseEvent = Handshake | Prologue | Item | End | Sentinel | Rejected

_REJECTION_BYTES = tuple(text.encode() for text in REJECTIONS)

_HANDSHAKE, _PROLOGUE, _ITEMS, _ENDED, _DONE = range(5)

#: What :meth:`ResponseStreamDecoder.next_data` returns when the next event is no
#: plain item (or not here yet): ask :meth:`~ResponseStreamDecoder.next_event` then.
NOT_DATA: Any = object()


class ResponseStreamDecoder:
    """The caller's side of one call-home connection: bytes in, events out.

    ``feed`` bytes, then call :meth:`next_event` until it returns ``None``. The
    handshake needs no codec; the items are decoded with ``codec``, which the
    owner sets once it knows the call (see :mod:`trioplane.response_plane`).
    Any rule broken raises :class:`~trioplane.MalformedStream`; call
    :meth:`check_eof` when the peer closes (raises
    :class:`~trioplane.StreamIncomplete` before the end).
    """

    def __init__(
        self,
        codec: PayloadCodec | None = None,
        *,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_item_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self.codec = codec
        self._frames = TwoPartDecoder(max_header_size=max_header_size, max_body_size=max_item_size)
        self._state = _HANDSHAKE
        self._end_pending = False
        self._first_item = False
        self._error: MalformedStream | None = None

    @property
    def ended(self) -> bool:
        """True once the stream is complete (end seen, or a failed prologue)."""
        return self._state >= _ENDED

    @property
    def done(self) -> bool:
        """True once nothing more may arrive (sentinel seen, or a failed prologue)."""
        return self._state == _DONE

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._frames.feed(data)

    def next_event(self) -> ResponseEvent | None:
        """The next event, or ``None`` until more bytes are fed.

        After a :class:`~trioplane.MalformedStream` the decoder is poisoned: the
        stream is out of sync, so every later call raises the same error.
        """
        if self._error is not None:
            raise self._error
        if self._end_pending:
            self._end_pending = False
            return End()
        if self._state == _ITEMS and self.codec is None:
            raise RuntimeError("set the decoder's codec before reading items")
        try:
            return self._next_event()
        except MalformedStream as exc:
            self._error = exc
            raise

    def next_data(self) -> Any:
        """The hot path of reading items: the data of the next item, if the next frame
        is a well-formed item after the first; else ``NOT_DATA``, and
        :meth:`next_event` tells what comes (another event, a broken rule, nothing yet).

        No :class:`Item` is made. The end frame is consumed here too (its event, and
        its data if it carries some, are what :meth:`next_event` would give).
        """
        if self._state != _ITEMS or self._first_item or self._end_pending:
            return NOT_DATA
        if self._error is not None:
            return NOT_DATA
        frames = self._frames
        body = frames.peek_body()
        if body is None:
            return NOT_DATA
        try:
            wrapper = self.codec.decode(body)  # type: ignore[union-attr]  # set: not first
        except ProtocolError:
            return NOT_DATA  # next_event decodes it again, and raises
        if wrapper.__class__ is not dict:
            return NOT_DATA
        final = wrapper.get("complete_final", False)
        data = wrapper.get("data")
        if final is False:
            if data is None:
                return NOT_DATA
        elif final is True:
            self._state = _ENDED
            self._end_pending = True  # End next, after the data the end carries if any
        else:
            return NOT_DATA
        frames.skip(body)
        return NOT_DATA if data is None else data

    def _next_event(self) -> ResponseEvent | None:
        try:
            message = self._frames.next_message()
        except ProtocolError as exc:
            raise MalformedStream(f"bad call-home frame: {exc}") from exc
        if message is None:
            return None
        header, body = message.header, message.body
        state = self._state
        if state == _ITEMS:
            if header:
                raise MalformedStream("response item frame has a header")
            return self._item(body)
        if state == _HANDSHAKE:
            if body:
                raise MalformedStream("call-home handshake has a body")
            try:
                subject = decode_handshake(header)
            except ProtocolError as exc:
                raise MalformedStream(str(exc)) from exc
            self._state = _PROLOGUE
            return Handshake(subject)
        if state == _PROLOGUE:
            return self._prologue(header, body)
        if state == _ENDED and header == SENTINEL and not body:
            self._state = _DONE
            return Sentinel()
        if state == _ENDED:
            raise MalformedStream("data after complete_final")
        raise MalformedStream("data after the end of the response stream")

    def _prologue(self, header: bytes, body: bytes) -> Prologue:
        if body or not header:
            raise MalformedStream("response prologue must be a header-only frame")
        if header == _PROLOGUE_OK:
            self._state = _ITEMS
            self._first_item = True
            return Prologue()
        try:
            obj = load_json(header, "response prologue")
        except ProtocolError as exc:
            raise MalformedStream(str(exc)) from exc
        if not isinstance(obj, dict) or "error" not in obj:
            raise MalformedStream("response prologue needs an 'error' field")
        error = obj["error"]
        self._state = _ITEMS if error is None else _DONE
        self._first_item = True
        return Prologue(error, obj.get("typed_error"))

    def _item(self, body: bytes) -> Item | End | Rejected:
        assert self.codec is not None
        if self._first_item and body.startswith(_REJECTION_BYTES):
            self._state = _DONE  # a worker shedding load on the stream (newer Dynamo)
            return Rejected(body.decode("utf-8", "replace"))
        try:
            wrapper = self.codec.decode(body)
        except ProtocolError as exc:
            raise MalformedStream(f"response item does not decode: {exc}") from exc
        if not isinstance(wrapper, dict):
            raise MalformedStream("response item is not a map")
        self._first_item = False
        final = wrapper.get("complete_final", False)
        if not isinstance(final, bool):
            raise MalformedStream("complete_final must be a boolean")
        data = wrapper.get("data")
        if final:
            self._state = _ENDED
            if data is None:
                return End()
            self._end_pending = True  # as Dynamo: the last item may ride on the end
            return Item(data)
        if data is None:
            raise MalformedStream("non-final response frame without data")
        return Item(data)

    def check_eof(self) -> None:
        """The peer closed: fine after the end, :class:`StreamIncomplete` before it."""
        if self._state < _ENDED:
            raise StreamIncomplete("stream ended before generation completed")
        if self._frames.buffered:
            raise MalformedStream("stream ended inside a frame after complete_final")


# -- the worker's side ------------------------------------------------------------------


def encode_prologue(error: Any = None, typed_error: Mapping[str, Any] | None = None) -> bytes:
    """``{"error":null}`` to start the stream, or the error that ends it at once, with
    Dynamo's ``typed_error`` object when given (:func:`~trioplane.wire.errors.prologue_error`)."""
    if error is None:
        return encode_two_part(_PROLOGUE_OK)
    obj: dict[str, Any] = {"error": error}
    if typed_error is not None:
        obj["typed_error"] = typed_error
    return encode_two_part(dump_json(obj))


def encode_item(codec: PayloadCodec, data: Any) -> bytes:
    """One response item, in Dynamo's wrapper (``data`` is the annotated item, not None)."""
    if data is None:
        raise BadArgument("a response item cannot be None (the wrapper's data marks an item)")
    return encode_two_part(body=codec.encode({"data": data, "complete_final": False}))


def encode_end(codec: PayloadCodec) -> bytes:
    """The ``complete_final`` frame."""
    return encode_two_part(body=codec.encode({"complete_final": True}))


def encode_sentinel() -> bytes:
    """The worker's last frame."""
    return encode_two_part(SENTINEL)


def encode_cancel(kind: str = CANCEL_STOP) -> bytes:
    """The caller's ``"stop"`` (graceful) or ``"kill"`` frame."""
    if kind not in (CANCEL_STOP, CANCEL_KILL):
        raise BadArgument(f"cancel kind must be 'stop' or 'kill', not {kind!r}")
    return encode_two_part(dump_json(kind))


def decode_cancel(header: bytes) -> str:
    """``"stop"`` or ``"kill"`` from a caller's control frame; :class:`ProtocolError` else."""
    kind = load_json(header, "call-home control frame")
    if kind not in (CANCEL_STOP, CANCEL_KILL):
        raise ProtocolError(f"unknown call-home control frame {kind!r}")
    assert isinstance(kind, str)
    return kind


def unwrap_annotated(item: Any) -> tuple[bool, Any]:
    """Split a Python worker's annotated item into ``(has_data, data)``.

    An error annotation (``event == "error"``) is the caller's to raise; an
    annotation without data (a bare ``event`` or ``comment``) carries no item.
    Anything that is not an annotation is an item as it stands.
    """
    if isinstance(item, Mapping) and ("data" in item or "event" in item or "comment" in item):
        if "data" in item and item["data"] is not None:
            return True, item["data"]
        return False, None
    return True, item
