"""End to end with real parts only, the two cases test_full_chain.py leaves out: the same chain (GStreamer RTSP
camera -> camera worker (ONNX detector + OCR) -> OCPP 1.6 charge point through the relay -> enforcement -> outbox
-> aiosmtpd), nothing posted to the service directly.

- A whitelisted car charges, idles well past the grace period and leaves: no e-mail at all, the visit is exempt
  and nothing is payable.
- The same idle car while the SMTP server is down (port closed) from before the warning is due until after the
  notice fell due: the outbox retries, and once the server is back exactly one warning and one notice arrive.

Slow: the idle fee is billed in whole minutes after a one-minute grace, so each runs for about three and a half
minutes. The camera clip is built once for both.
"""

import asyncio
import os
import shutil
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, select

from baywarden.demo import PLATE, DemoOptions, DemoStack, free_port
from models.db import make_engine
from models.outbox import OutboxMessage, OutboxState
from models.tables import Penalty, TimerRow, VisitRow
from tests.e2e.test_full_chain import _require, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# The idle scenario of test_full_chain.py with 1 s between the charger's other steps (SuspendedEV comes ~14 s
# after the service is up instead of ~22 s), so the car can leave 10 s earlier: it is still parked for ~15 s
# after the unplug. Idle 125 s with a 1 min grace: a car that is not exempt is billed one whole minute.
PARKED_S, IDLE_S, STEP_S, GRACE_MIN = 150, 125.0, 1.0, 1


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the camera clip once (about 30 s of ffmpeg on this machine) for both tests."""
    _require()
    where = tmp_path_factory.mktemp("clip")
    DemoStack(where, DemoOptions(parked_s=PARKED_S))._clip()
    return where


def _workdir(clip_dir: Path, tmp_path: Path) -> Path:
    """A fresh demo folder (own database and evidence) that already holds the clip."""
    workdir = tmp_path / "demo"
    workdir.mkdir()
    for clip in clip_dir.glob("*.mp4"):
        try:
            os.link(clip, workdir / clip.name)
        except OSError:
            shutil.copyfile(clip, workdir / clip.name)
    return workdir


def _options(**kw: object) -> DemoOptions:
    return DemoOptions(port=free_port(), parked_s=PARKED_S, idle_s=IDLE_S, step_s=STEP_S, grace_min=GRACE_MIN, **kw)


def _rows(db_url: str, model: type, *where: object) -> list:
    engine = make_engine(db_url)
    try:
        with Session(engine) as db:
            return list(db.exec(select(model).where(*where)))
    finally:
        engine.dispose()


def _visit_closed(db_url: str) -> bool:
    return any(v.departed_at is not None for v in _rows(db_url, VisitRow))


def test_whitelisted_car_gets_no_mail_and_owes_nothing(clip_dir, tmp_path):
    _require()
    stack = DemoStack(_workdir(clip_dir, tmp_path), _options(plate_list="white"))
    try:
        settings = asyncio.run(stack.run())  # plugged in, charged, idle for IDLE_S, unplugged
        assert stack.mailbox is not None
        # A car that is not exempt gets its notice when the visit closes (the car is gone): wait for that moment.
        wait_until(lambda: _visit_closed(settings.db_url), 150, "the car to leave")
        time.sleep(8)  # the outbox is sent every second: a warning or notice would have arrived by now
        mails = list(stack.mailbox.messages)
        visits = _rows(settings.db_url, VisitRow)
        penalties = _rows(settings.db_url, Penalty)
        outbox = _rows(settings.db_url, OutboxMessage)
        timers = _rows(settings.db_url, TimerRow)
    finally:
        stack.stop()
    assert mails == [], [m["Subject"] for m in mails]
    assert outbox == [], [(o.template, o.recipient) for o in outbox]
    (visit,) = visits
    assert visit.plate == PLATE and visit.exempt and not visit.blacklisted
    assert visit.transaction_id is not None and visit.departed_at is not None
    assert (visit.data.get("exempt_reason") or "").startswith("whitelist")
    # The charger really idled long enough for a fee: charging finished, then the cable stayed in past the grace
    # plus at least one whole minute, as in the idle test, which bills that car.
    idle = visit.data["unplugged_at"], visit.data["charging_complete_at"]
    assert all(idle), idle
    idle_for = datetime.fromisoformat(idle[0]) - datetime.fromisoformat(idle[1])
    assert idle_for >= timedelta(minutes=GRACE_MIN + 1), idle_for
    whats = [e["what"] for e in visit.data["timeline"]]
    assert "exempt" in whats and "idle" in whats and "unplugged" in whats, whats
    assert "warning" not in whats, whats
    assert not [p for p in penalties if p.visit_id == visit.visit_id or p.plate == PLATE]
    assert not [t for t in timers if t.visit_id == visit.visit_id], "an exempt visit runs no timers"


class _OutboxHistory(threading.Thread):
    """Samples the outbox rows every 0.2 s and keeps, per row, each (state, attempts) it was seen in."""

    def __init__(self, stack: DemoStack):
        super().__init__(name="outbox-history", daemon=True)
        self.stack = stack
        self.seen: dict[str, list[tuple[str, int]]] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.stack.db_url and not self.halt.is_set():
            time.sleep(0.1)
        if self.halt.is_set():
            return
        engine = make_engine(self.stack.db_url)
        try:
            while not self.halt.wait(0.2):
                try:
                    with Session(engine) as db:
                        rows = list(db.exec(select(OutboxMessage)))
                except Exception:  # the tables may not exist yet, or SQLite is busy: try again
                    continue
                for row in rows:
                    states = self.seen.setdefault(row.template, [])
                    now = (str(OutboxState(row.state).value), row.attempts)
                    if not states or states[-1] != now:
                        states.append(now)
        finally:
            engine.dispose()


def test_smtp_outage_loses_nothing_and_doubles_nothing(clip_dir, tmp_path):
    _require()
    # Retries every 2-8 s instead of the product's 1 min doubling (notifications.retry_* settings);
    # enough attempts for a three-minute outage.
    retry = {"retry_max_attempts": 500, "retry_base_s": 2, "retry_max_s": 8}
    downs: list[float] = []

    def smtp_down(stack: DemoStack) -> None:  # once the service is up, before the charger connects
        stack.mail_down()
        downs.append(time.monotonic())

    stack = DemoStack(_workdir(clip_dir, tmp_path), _options(outbox_retry=retry, before_charging=smtp_down))
    history = _OutboxHistory(stack)
    history.start()
    try:
        settings = asyncio.run(stack.run())  # the warning fell due at SuspendedEV, while the port was closed
        assert stack.mailbox is not None and downs, "the SMTP server went down before the charger connected"

        def notice_failed() -> bool:
            rows = _rows(settings.db_url, OutboxMessage, OutboxMessage.template == "penalty_notice")
            return any(r.state == OutboxState.failed and r.attempts >= 1 for r in rows)

        # The notice falls due when the car has left; wait until it, too, has failed at least once.
        wait_until(notice_failed, 150, "the penalty notice to fail against the closed port")
        assert stack.mailbox.messages == [], "nothing can arrive while the server is down"
        (warning_row,) = _rows(settings.db_url, OutboxMessage, OutboxMessage.template == "penalty_warning")
        assert warning_row.state != OutboxState.sent and warning_row.attempts > 1, warning_row
        outage_s = time.monotonic() - downs[0]

        stack.mail_up()  # the same port again
        wait_until(lambda: len(stack.mailbox.messages) >= 2, 60, "both e-mails after the server is back")
        time.sleep(10)  # anything doubled would arrive now (retries are at most 8 s apart)
        mails = list(stack.mailbox.messages)
        outbox = _rows(settings.db_url, OutboxMessage)
        penalties = _rows(settings.db_url, Penalty)
        visits = _rows(settings.db_url, VisitRow)
    finally:
        history.halt.set()
        stack.stop()
        history.join(5)
    print(f"SMTP down for {outage_s:.0f} s; outbox history: {history.seen}")

    # Exactly one warning and one notice: nothing lost, nothing doubled.
    assert [m["To"] for m in mails] == ["driver@example.org", "driver@example.org"]
    assert len({m["Message-ID"] for m in mails}) == 2
    (warning,) = [m for m in mails if "move your car" in m["Subject"]]
    (notice,) = [m for m in mails if m["Subject"].startswith("Penalty notice")]

    # The outbox kept both rows through the outage and retried them.
    assert sorted(r.template for r in outbox) == ["penalty_notice", "penalty_warning"]
    for row in outbox:
        assert row.state == OutboxState.sent and row.attempts > 1, (row.template, row.state, row.attempts)
        assert row.last_error and "SMTP" in row.last_error, row.last_error  # why the earlier attempts failed
        seen_states = [s for s, _ in history.seen[row.template]]
        assert "failed" in seen_states and seen_states[-1] == "sent", history.seen[row.template]
        assert [s for s in seen_states if s == "sent"] == ["sent"], history.seen[row.template]
    by_template = {r.template: r for r in outbox}
    assert warning["X-Baywarden-Notification"] == by_template["penalty_warning"].id
    assert notice["X-Baywarden-Notification"] == by_template["penalty_notice"].id
    assert by_template["penalty_warning"].attempts > by_template["penalty_notice"].attempts  # down for longer

    # The right amount and the evidence, as without the outage.
    (visit,) = visits
    assert visit.plate == PLATE and visit.departed_at is not None and not visit.exempt
    (penalty,) = penalties
    assert penalty.kind == "idle" and penalty.state == "notice_issued" and penalty.minutes >= 1
    assert Decimal(penalty.amount) == Decimal(penalty.minutes) * Decimal("1.00")
    text = notice.get_body(("plain",)).get_content()
    assert PLATE in text and f"{Decimal(penalty.amount):.2f}" in text
    images = [p for p in notice.walk() if p.get_content_type() == "image/jpeg"]
    assert images, "the notice carries the evidence crop"
