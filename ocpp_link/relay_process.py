"""The OCPP relay in a process of its own, as the service runs it.

Nothing else runs on that process's event loop: not the API, not the thread that stores events in
the database, not a collector walking the service's large heap. In the service's own process the
event writer alone added about 4 ms to every relayed call at p50 and 10 ms at p99 (one charger,
`bench/ocpp_relay.py --service`), because a frame that arrived while the writer ran Python waited
for the GIL.

Child to parent, on a pipe: length-prefixed pickles ``("ready", port)``, ``("error", text)``,
``("events", [event, ...])``, ``("stopped", dropped)``. The child
writes through a non-blocking pipe transport and never waits for the parent: when the parent is
more than `MAX_BACKLOG` bytes behind (database down, say), events are dropped and counted
(``baywarden_ocpp_relay_events_dropped_total``), frames keep flowing.
Parent and child also share a duplex `multiprocessing` connection for control: ``"metrics"`` (answered
on it with the counters, so they never wait behind a backlog of events) and ``"stop"``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import signal
import struct
from multiprocessing.connection import Connection
from typing import Any

from models.logsetup import setup_logging
from models.settings import RelaySettings
from ocpp_link.decoder import OcppDecoder
from ocpp_link.relay import OcppRelay, RelayConfig

MAX_BACKLOG = 8 << 20  # bytes of events the parent has not read yet, before events are dropped
_HEAD = struct.Struct("!I")
_STOP_FLUSH_S = 10.0  # at the end, how long the parent gets to read what is left


def encode(message: tuple[str, Any]) -> bytes:
    """One framed message of the child-to-parent pipe."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(data)) + data


def read_message(stream: Any) -> tuple[str, Any] | None:
    """The next message from a blocking binary stream; None at the end of the stream."""
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    size = _HEAD.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    message: tuple[str, Any] = pickle.loads(data)  # our own child's bytes, never a stranger's
    return message


def relay_main(
    settings: RelaySettings, log_level: str, out: Connection, ctl: Connection, max_backlog: int = MAX_BACKLOG
) -> None:
    """Entry point of the relay process (spawned by `service.relay_control.RelayComponent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it tells us to stop
    setup_logging(log_level, "ocpp-relay")
    fd = os.dup(out.fileno())
    out.close()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(settings, fd, ctl, max_backlog))
    else:
        uvloop.run(_serve(settings, fd, ctl, max_backlog))


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _serve(settings: RelaySettings, fd: int, ctl: Connection, max_backlog: int) -> None:
    loop = asyncio.get_running_loop()
    transport, pipe = await loop.connect_write_pipe(_Pipe, os.fdopen(fd, "wb", buffering=0))
    dropped = 0
    pending: list[Any] = []

    def send(message: tuple[str, Any], force: bool = False) -> bool:
        if transport.is_closing() or (not force and transport.get_write_buffer_size() > max_backlog):
            return False
        transport.write(encode(message))
        return True

    def flush() -> None:
        nonlocal pending, dropped
        batch, pending = pending, []
        if batch and not send(("events", batch)):
            dropped += len(batch)

    def sink(events: Any) -> None:
        # One message per loop iteration, however many frames it decoded.
        if not pending:
            loop.call_soon(flush)
        pending.extend(events)

    relay = OcppRelay(RelayConfig.from_settings(settings), OcppDecoder(), sink)
    try:
        await relay.start()
    except Exception as exc:  # the port is taken, the certificate unreadable...
        send(("error", f"{type(exc).__name__}: {exc}"), force=True)
        transport.close()
        await pipe.closed
        return
    # What exists now lives as long as the process: frozen, collections walk only what connections add.
    gc.collect()
    gc.freeze()
    send(("ready", relay.port), force=True)

    stop = asyncio.Event()

    def on_control() -> None:
        try:
            while ctl.poll():
                command = ctl.recv()
                if command == "metrics":
                    samples = relay.metrics()
                    samples["baywarden_ocpp_relay_events_dropped_total"] = dropped
                    ctl.send(samples)  # on the control connection: never queued behind events
                elif command == "stop":
                    stop.set()
        except (EOFError, OSError):  # the parent is gone: nobody to store events for
            stop.set()

    loop.add_reader(ctl.fileno(), on_control)
    await stop.wait()
    loop.remove_reader(ctl.fileno())
    await relay.stop()  # decodes what is queued; those events go out below
    flush()
    send(("stopped", dropped), force=True)
    transport.close()  # after what is buffered has been written, if the parent reads it in time
    try:
        await asyncio.wait_for(asyncio.shield(pipe.closed), _STOP_FLUSH_S)
    except TimeoutError:
        transport.abort()
