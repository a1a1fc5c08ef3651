"""Stored events handed from threads (MQTT, FTP, Dahua, the scheduler) to the event loop's listeners:
every one arrives, each thread's in its order, and a burst wakes the loop a few times, not once per call."""

from __future__ import annotations

import asyncio
import threading

from models.db import make_engine
from service.context import AppContext
from tests.foundation.helpers import make_settings


def test_events_from_threads_reach_the_listeners_in_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    ctx = AppContext(settings=make_settings(tmp_path, url), engine=make_engine(url))
    got: list[tuple[int, int]] = []
    wakes = 0

    async def main() -> None:
        nonlocal wakes
        loop = asyncio.get_running_loop()
        ctx.loop = loop
        ctx.listeners.append(got.append)
        original = loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            nonlocal wakes
            wakes += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]

        def send(t: int) -> None:
            for i in range(2000):
                ctx.publish_from_thread([(t, i)])

        threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            await asyncio.sleep(0.001)
        for _ in range(100):
            if len(got) == 8000:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert len(got) == 8000
    for t in range(4):
        assert [i for tt, i in got if tt == t] == list(range(2000))
    assert wakes < 8000 / 4  # handed over in bulk (one wake per call before)
