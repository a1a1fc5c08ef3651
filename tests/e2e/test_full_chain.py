"""End to end with real parts only: GStreamer RTSP camera -> camera worker (ONNX detector + OCR) ->
OCPP 1.6 charge point through the relay to a CSMS -> enforcement -> outbox -> aiosmtpd.

A car arrives, plugs in, charging completes, it idles past the grace period, unplugs and leaves:
exactly one warning and one penalty notice e-mail, with the right amount and the evidence image.
A blacklisted car raises an operator alert as soon as it is read. (Slow: the idle fee is billed
in whole minutes, so this runs for about four minutes.)"""

import asyncio
import shutil
import time
from decimal import Decimal

import httpx
import pytest
from sqlmodel import Session, select

from baywarden.demo import PLATE, DemoOptions, DemoStack, free_port
from models.db import make_engine
from models.tables import Alert, Penalty, VisitRow
from tests.conftest import need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _require() -> None:
    need(shutil.which("ffmpeg") is not None, "ffmpeg is needed for the clip")
    import subprocess

    gi = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                        capture_output=True)
    need(gi.returncode == 0, "Debian's GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0) is needed")


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_idle_car_gets_one_warning_and_one_notice(tmp_path):
    _require()
    stack = DemoStack(tmp_path, DemoOptions(port=free_port()))
    try:
        settings = asyncio.run(stack.run())
        assert stack.mailbox is not None
        wait_until(lambda: len(stack.mailbox.messages) >= 2, 180, "the penalty notice")
        time.sleep(5)  # anything doubled would arrive now
        mails = stack.mailbox.messages
        engine = make_engine(settings.db_url)
        with Session(engine) as db:
            penalties = list(db.exec(select(Penalty)))
            visits = list(db.exec(select(VisitRow)))
        engine.dispose()
    finally:
        stack.stop()
    assert [m["To"] for m in mails] == ["driver@example.org", "driver@example.org"]
    warning, notice = mails
    assert "move your car" in warning["Subject"]
    (visit,) = visits
    assert visit.plate == PLATE and visit.transaction_id is not None and visit.departed_at is not None
    (penalty,) = penalties
    assert penalty.kind == "idle" and penalty.state == "notice_issued" and penalty.minutes >= 1
    assert Decimal(penalty.amount) == Decimal(penalty.minutes) * Decimal("1.00")
    text = notice.get_body(("plain",)).get_content()
    assert PLATE in text and f"{Decimal(penalty.amount):.2f}" in text
    images = [p for p in notice.iter_attachments()] + [p for p in notice.walk() if p.get_content_type() == "image/jpeg"]
    assert images, "the notice carries the evidence crop"


def test_blacklisted_car_alerts_operators(tmp_path):
    _require()
    opts = DemoOptions(port=free_port(), plate_list="black", parked_s=40, idle_s=1, step_s=0.2)
    stack = DemoStack(tmp_path, opts)
    try:
        settings = asyncio.run(stack.run())

        def alerted() -> bool:
            engine = make_engine(settings.db_url)
            with Session(engine) as db:
                found = db.exec(select(Alert).where(Alert.kind == "blacklist")).first()
            engine.dispose()
            return found is not None

        wait_until(alerted, 90, "the blacklist alert")
        r = httpx.get(f"{stack.base_url}/healthz")
        assert r.status_code == 200
    finally:
        stack.stop()
