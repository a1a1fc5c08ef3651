"""Fail-open tap between the relay's forwarding path and the decoder.

The forwarding path only calls `FrameTap.wants()` and `FrameTap.offer()`: a few substring checks (no
JSON parsing) and an append to a bounded queue per connection, drained by a callback on the event
loop. A full queue or a decoder exception costs one undecoded frame, never a forwarded one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ocpp_link.decoder import INTERESTING_CS_ACTIONS, PAIRED_ACTIONS, Direction

log = logging.getLogger(__name__)

_MAX_PENDING_IDS = 16  # a charger has at most one call in flight; a few spare for bad ones


class FrameDecoder(Protocol):
    """What the tap needs from a decoder (`ocpp_link.decoder.OcppDecoder` is one)."""

    def decode(
        self, charge_point_id: str, direction: Direction, raw_text: str | bytes, received_at: datetime
    ) -> Sequence[Any]: ...

    def connection_opened(self, charge_point_id: str, subprotocol: str | None) -> None: ...

    def connection_closed(self, charge_point_id: str) -> None: ...


EventSink = Callable[[Sequence[Any]], None]


@dataclass
class RelayCounters:
    """Relay-wide counters. Plain ints: the event loop is single-threaded, so no locks."""

    connections_total: int = 0
    connections_active: int = 0
    rejected_bad_id: int = 0
    rejected_no_upstream: int = 0
    upstream_refused: int = 0  # CSMS answered the handshake with an HTTP error
    upstream_failed: int = 0  # could not connect (refused, DNS, TLS, bad handshake) -> 502
    upstream_timeout: int = 0  # -> 504
    frames_cs_to_csms: int = 0
    frames_csms_to_cs: int = 0
    bytes_cs_to_csms: int = 0  # payload bytes of data messages as forwarded (compressed if deflate is on)
    bytes_csms_to_cs: int = 0
    frames_tapped: int = 0  # passed the prefilter and queued for decoding
    undecoded: int = 0  # tapped frames that produced no decode (queue full or decoder error)
    dropped_queue_full: int = 0
    decoder_errors: int = 0
    sink_errors: int = 0
    events_emitted: int = 0
    pings_sent: int = 0  # the relay's own liveness pings to a silent side
    liveness_timeouts: int = 0  # sides closed (1011) for not answering one
    protocol_errors: int = 0  # sides closed (1002) for frames that break RFC 6455

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def prometheus_samples(self, prefix: str = "baywarden_ocpp_relay") -> dict[str, int]:
        """Sample name (with labels) -> value, in the text exposition naming."""
        d = self.as_dict()
        out = {
            f'{prefix}_frames_forwarded_total{{direction="cs_to_csms"}}': d.pop("frames_cs_to_csms"),
            f'{prefix}_frames_forwarded_total{{direction="csms_to_cs"}}': d.pop("frames_csms_to_cs"),
            f'{prefix}_bytes_forwarded_total{{direction="cs_to_csms"}}': d.pop("bytes_cs_to_csms"),
            f'{prefix}_bytes_forwarded_total{{direction="csms_to_cs"}}': d.pop("bytes_csms_to_cs"),
            f"{prefix}_connections_active": d.pop("connections_active"),
        }
        for name, value in d.items():
            out[f"{prefix}_{name}_total"] = value
        return out


def message_id(frame: str | bytes) -> str | bytes | None:
    """The OCPP-J message id (first JSON string) without parsing; None if there is none."""
    q = '"' if isinstance(frame, str) else b'"'
    i = frame.find(q)  # type: ignore[arg-type]
    if i < 0:
        return None
    j = frame.find(q, i + 1)  # type: ignore[arg-type]
    return frame[i + 1 : j] if j > 0 else None


class Prefilter:
    """Byte-level decision: is this frame worth parsing? Runs in the forwarding path, so no JSON.

    Charge point calls pass when they name an interesting action (quoted, so "StartTransaction"
    does not match "RemoteStartTransaction"). CSMS answers pass only when their message id is one
    of a paired call we saw go out; the id is recorded here, synchronously, so a fast answer can
    never overtake the decoder's knowledge of its request.
    """

    __slots__ = ("_paired", "_paired_b", "_wanted", "_wanted_b", "pending")

    def __init__(
        self, actions: frozenset[str] = INTERESTING_CS_ACTIONS, paired: frozenset[str] = PAIRED_ACTIONS
    ) -> None:
        self._wanted = tuple(f'"{a}"' for a in sorted(actions))
        self._wanted_b = tuple(w.encode() for w in self._wanted)
        self._paired = tuple(f'"{a}"' for a in sorted(paired))
        self._paired_b = tuple(w.encode() for w in self._paired)
        self.pending: set[str | bytes] = set()

    def from_cs(self, frame: str | bytes) -> bool:
        is_str = isinstance(frame, str)
        for needle in self._wanted if is_str else self._wanted_b:
            if needle in frame:  # type: ignore[operator]
                break
        else:
            return False
        for needle in self._paired if is_str else self._paired_b:
            if needle in frame:  # type: ignore[operator]
                mid = message_id(frame)
                if mid is not None:
                    if len(self.pending) >= _MAX_PENDING_IDS:
                        self.pending.pop()
                    self.pending.add(mid)
                break
        return True

    def from_csms(self, frame: str | bytes) -> bool:
        if not self.pending:
            return False
        mid = message_id(frame)
        if mid is not None and mid in self.pending:
            self.pending.discard(mid)
            return True
        return False


class FrameTap:
    """One per charger connection: prefilter, bounded queue, decoding scheduled on the event loop.

    Decoding runs in a loop callback, scheduled when the queue goes from empty to non-empty, that
    drains the whole queue: the same order and isolation as a task per connection, without a task,
    a future and two task switches for every frame.
    """

    def __init__(
        self,
        charge_point_id: str,
        decoder: FrameDecoder | None,
        sink: EventSink | None,
        counters: RelayCounters,
        queue_size: int = 1024,
        stop_timeout: float = 5.0,  # kept for callers; stop() no longer waits for anything
    ) -> None:
        self.stop_timeout = stop_timeout
        self.charge_point_id = charge_point_id
        self.decoder = decoder
        self.sink = sink
        self.counters = counters
        self.prefilter = Prefilter()
        self.queue_size = queue_size
        self._queue: deque[tuple[Direction, str | bytes, datetime]] = deque()
        self._active = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: asyncio.Handle | None = None
        self._errors_logged = 0

    def start(self, subprotocol: str | None) -> None:
        if self.decoder is None:
            return
        try:
            self.decoder.connection_opened(self.charge_point_id, subprotocol)
        except Exception:
            log.exception("decoder.connection_opened failed for %s", self.charge_point_id)
        self._loop = asyncio.get_running_loop()
        self._active = True

    def wants(self, direction: Direction) -> bool:
        """At the start of a message: is a copy worth making? (A CSMS frame only pairs with a pending id.)"""
        return self._active and (direction == "cs" or bool(self.prefilter.pending))

    def offer(self, direction: Direction, frame: str | bytes) -> None:
        """Hot path. Never awaits, never raises."""
        if not self._active:
            return
        wanted = self.prefilter.from_cs(frame) if direction == "cs" else self.prefilter.from_csms(frame)
        if not wanted:
            return
        if len(self._queue) >= self.queue_size:
            self.counters.dropped_queue_full += 1
            self.counters.undecoded += 1
            return
        self._queue.append((direction, frame, datetime.now(UTC)))
        self.counters.frames_tapped += 1
        if self._scheduled is None:
            assert self._loop is not None
            self._scheduled = self._loop.call_soon(self._drain)

    async def stop(self) -> None:
        """Decode what is queued (the last frames of a session matter), then end the session."""
        if not self._active:
            return
        self._active = False
        if self._scheduled is not None:
            self._scheduled.cancel()
        self._drain()
        try:
            assert self.decoder is not None
            self.decoder.connection_closed(self.charge_point_id)
        except Exception:
            log.exception("decoder.connection_closed failed for %s", self.charge_point_id)

    def _drain(self) -> None:
        self._scheduled = None
        assert self.decoder is not None
        decode = self.decoder.decode
        cp = self.charge_point_id
        queue = self._queue
        while queue:
            direction, frame, received_at = queue.popleft()
            try:
                events = decode(cp, direction, frame, received_at)
            except Exception:
                self.counters.decoder_errors += 1
                self.counters.undecoded += 1
                if self._errors_logged < 3:  # per connection; the counter tells the rest
                    self._errors_logged += 1
                    log.exception("decoder raised on a frame from %s (frame forwarded anyway)", cp)
                continue
            if events and self.sink is not None:
                try:
                    self.sink(events)
                    self.counters.events_emitted += len(events)
                except Exception:
                    self.counters.sink_errors += 1
                    log.exception("event sink raised for %s", cp)
