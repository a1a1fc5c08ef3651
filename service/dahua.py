"""Dahua ANPR cameras (sources of kind `dahua`): the camera pushes nothing by itself, Baywarden subscribes.

One thread per enabled dahua source holds the camera's snapManager subscription open (HTTP Digest with
the source's `username` and `secret`), parses the multipart stream (`sources.dahua`) and stores each
TrafficJunction event through the group-commit writer like every outside read, with its pictures as
evidence. A stream that fails (refused login, camera away, silence past three heartbeats, a part over
its size limit) is retried after 1 s, doubling up to 60 s; a connection that delivered parts without a
protocol error resets the wait. Refused events (unmapped camera, rate limit) are counted on the source
with their reason, as are failed connections: once per distinct reason, not at every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from models.settings import SourceSettings
from service.context import AppContext
from service.runtime_settings import sources_at_start
from sources.dahua import DahuaEvent, StreamParser, boundary_of, event_reads, mapped_camera
from sources.reads import SourceError

log = logging.getLogger(__name__)
MAX_BACKLOG = 5000  # events waiting for the writer before a camera's thread waits with them
SUBSCRIBE = "/cgi-bin/snapManager.cgi?action=attachFileProc&Flags[0]=Event&Events=[TrafficJunction]&heartbeat={hb}"


class DahuaComponent:
    name = "dahua"

    def __init__(self, ctx: AppContext, heartbeat_s: int = 5, backoff_s: tuple[float, float] = (1.0, 60.0)) -> None:
        self.ctx = ctx
        self.heartbeat_s = heartbeat_s
        self.backoff_s = backoff_s
        # Read once: a subscription holds a connection, so dahua edits apply at the next start.
        self.sources = [s for s in sources_at_start(ctx) if s.kind == "dahua" and s.enabled]
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._streams: dict[str, Any] = {}  # source name -> the open connection's socket (shut to stop a read)
        self._last_failure: dict[str, str] = {}  # source name -> the failure counted last
        self.subscribed: dict[str, int] = {}  # source name -> connections that delivered a part
        self.received = 0  # events stored

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._halt.clear()
        self.ctx.intake()  # made here, once: the cameras' threads would race to make it
        for source in self.sources:
            thread = threading.Thread(target=self._run, args=(source,), name=f"dahua-{source.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
            log.info("dahua source %s: subscribing to %s", source.name, source.device_url)

    async def stop(self) -> None:
        self._halt.set()
        with self._lock:
            open_now = list(self._streams.values())
        for sock in open_now:
            _shut(sock)  # a read blocked until the next heartbeat returns now
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)
            if thread.is_alive():
                log.warning("%s did not stop within 10 s", thread.name)
        self._threads.clear()

    # --- one camera --------------------------------------------------------------------------------

    def _run(self, source: SourceSettings) -> None:
        import httpx

        assert source.device_url and source.username and source.secret  # the settings require them
        first, longest = self.backoff_s
        # A read timeout of three heartbeats: a camera that missed them is gone, whatever TCP says.
        timeout = httpx.Timeout(5.0, read=3.0 * self.heartbeat_s)
        auth = httpx.DigestAuth(source.username, source.secret.get_secret_value())
        delay = first
        with httpx.Client(auth=auth, timeout=timeout, follow_redirects=False) as client:
            while not self._halt.is_set():
                try:
                    good = self._subscribe(client, source)
                except Exception:  # a bug or an odd camera must not end the source's thread for good
                    log.exception("dahua source %s: subscription failed", source.name)
                    good = False
                if good:
                    delay = first
                if self._halt.wait(delay):
                    break
                if not good:
                    delay = min(delay * 2, longest)

    def _subscribe(self, client: Any, source: SourceSettings) -> bool:
        """One subscription, until the stream ends or fails; True when it delivered parts without a
        protocol error (the reconnection wait starts over)."""
        import httpx

        url = f"{source.device_url}{SUBSCRIBE.format(hb=self.heartbeat_s)}"
        good = False
        try:
            with client.stream("GET", url) as response:
                if response.status_code == 401:
                    self._failed(source, "the camera refused the login (HTTP 401): check username and secret")
                    return False
                ctype = response.headers.get("content-type", "")
                if response.status_code != 200 or not ctype.lower().startswith("multipart/"):
                    self._failed(source, f"the camera answered HTTP {response.status_code} {ctype[:60]!r}: "
                                         f"{_head(response)!r}, not an event stream (is it a Dahua ANPR camera?)")
                    return False
                if not self._register(source, response):
                    return False
                parser = StreamParser(boundary_of(ctype))
                for chunk in response.iter_bytes():
                    if self._halt.is_set():
                        return good
                    events = parser.feed(chunk)
                    if parser.parts and not good:
                        good = True
                        self._up(source)
                    for event in events:
                        self._event(source, event)
                    if parser.ended:
                        break
                for event in parser.close():
                    self._event(source, event)
            if not self._halt.is_set():
                log.info("dahua source %s: the camera closed the stream; reconnecting", source.name)
            return good
        except SourceError as exc:
            # A camera that breaks the format's bounds: its connection goes rather than our memory.
            self._failed(source, f"stream dropped: {exc}", always=True)
            return False
        except httpx.HTTPError as exc:
            if self._halt.is_set():
                return good
            if isinstance(exc, httpx.ReadTimeout):
                reason = f"the camera sent nothing for {3 * self.heartbeat_s} s (three heartbeats missed)"
            elif isinstance(exc, httpx.ConnectTimeout):
                reason = "the camera did not answer within 5 s (address, port, network?)"
            else:
                reason = f"connection to the camera failed: {type(exc).__name__}: {str(exc)[:200]}"
            self._failed(source, reason)
            return good
        finally:
            with self._lock:
                self._streams.pop(source.name, None)

    def _register(self, source: SourceSettings, response: Any) -> bool:
        """Keep the stream's socket where stop() can shut it; False when stop() came first."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            if sock is not None:
                self._streams[source.name] = sock
            return not self._halt.is_set()

    def _up(self, source: SourceSettings) -> None:
        self.subscribed[source.name] = self.subscribed.get(source.name, 0) + 1
        if self._last_failure.pop(source.name, None) is not None or self.subscribed[source.name] == 1:
            log.info("dahua source %s: subscribed", source.name)

    # --- events --------------------------------------------------------------------------------------

    def _event(self, source: SourceSettings, event: DahuaEvent) -> None:
        from service.sources import LIMITS, prepare_reads

        now = self.ctx.clock()
        where = f"channel {(event.fields.get('Channel') or event.fields.get('Index') or '0')[:20]}"
        try:
            reads = event_reads(event, now)
            if not reads:
                return
            if LIMITS.allow(source):
                raise SourceError(f"more than {source.max_per_s:g} events per second: dropped")
            ids = [c.id for c in source.cameras]
            for read in reads:
                if mapped_camera(read, ids) is None:
                    raise SourceError(f"camera {read.camera_id!r} (channel/lane) is not mapped to a bay in "
                                      f"source {source.name!r}")
            items = prepare_reads(source, reads, self.ctx.settings.evidence_dir)
            # The writer stores it with whatever else came meanwhile; this thread goes on reading the camera.
            writer = self.ctx.intake()
            stored = writer.submit(source, items, now)
            stored.add_done_callback(lambda done: self._stored(done, source.name, where, now))
            if writer.backlog() > MAX_BACKLOG:
                stored.exception(timeout=60)
        except SourceError as exc:
            log.info("dahua source %s: event refused: %s: %s", source.name, where, exc)
            self._refused(source.name, now, f"{where}: {exc}")
        except Exception:
            log.exception("dahua source %s: an event could not be stored", source.name)

    def _stored(self, done: Future[Any], name: str, where: str, now: datetime) -> None:
        exc = done.exception()
        if exc is None:
            self.received += 1
            self.ctx.publish_from_thread(done.result())
            return
        log.error("dahua source %s: event on %s not stored: %s", name, where, exc)
        self._refused(name, now, f"{where}: not stored ({type(exc).__name__})")

    # --- refusals ------------------------------------------------------------------------------------

    def _failed(self, source: SourceSettings, reason: str, always: bool = False) -> None:
        """A failed connection: logged each time, counted when its reason differs from the last one
        counted (a camera away for a day is one refusal, not one per retry)."""
        log.warning("dahua source %s: %s", source.name, reason)
        if always or self._last_failure.get(source.name) != reason:
            self._last_failure[source.name] = reason
            self._refused(source.name, self.ctx.clock(), reason)

    def _refused(self, name: str, now: datetime, reason: str) -> None:
        from sqlalchemy.exc import IntegrityError

        from service.sources import count

        for attempt in (1, 2):
            try:
                with self.ctx.session() as db:
                    count(db, name, now, reason)
                    db.commit()
                return
            except IntegrityError:
                # The source's first counter row was inserted by the writer at the same moment: it exists now.
                if attempt == 2:
                    log.exception("could not count the refusal")
            except Exception:
                log.exception("could not count the refusal")
                return


def _head(response: Any, limit: int = 200) -> str:
    """The start of an error answer (a camera may stream even those without end)."""
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    except Exception:  # what matters is the status already logged
        pass
    return data[:limit].decode("utf-8", "replace").strip()


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError):  # already closed by its own thread
        sock.shutdown(socket.SHUT_RDWR)
