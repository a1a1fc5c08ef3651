"""`baywarden demo`: the whole chain on one machine, with real parts on 127.0.0.1.

A clip made from a real photo is served by GStreamer's RTSP server; the camera worker reads the
plate; a simulated charge point (OCPP 1.6) plugs in through the relay to a small CSMS, charges,
goes idle past the grace period and unplugs; the car leaves; the engine raises the idle fee and the
notice goes out through a local SMTP server. The same stack backs the end-to-end test.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLIP_BAY = [[200.0, 200.0], [780.0, 200.0], [780.0, 640.0], [200.0, 640.0]]  # fixtures/make_fixtures.py
PLATE = "B99BNX"  # the plate in the clip's source photo (fixtures/bay_car.jpg)


_ports_given: set[int] = set()


def missing_prerequisites(workdir: Path) -> list[str]:
    """What the demo needs and this machine lacks, one line each with how to get it (empty: all there)."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("aiosmtpd") is None:
        missing.append('the demo\'s mail server: .venv/bin/pip install -e ".[demo]"')
    have_clip = any(Path(workdir).glob("demo_*s_v3.mp4"))
    if not have_clip and shutil.which("ffmpeg") is None:
        missing.append("ffmpeg, to build the camera clip: sudo apt-get install ffmpeg")
    photo = REPO / "fixtures" / "bay_car.jpg"  # committed: the demo needs no ../shared
    if not have_clip and not photo.is_file():
        missing.append(f"the clip's source photo {photo} (part of the repository: restore it with git)")
    gi = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                        capture_output=True) if Path("/usr/bin/python3").exists() else None
    if gi is None or gi.returncode != 0:
        missing.append("GStreamer's RTSP server: sudo apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                       "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav")
    return missing


def free_port() -> int:
    """A port free on 127.0.0.1 now and never given out before by this process: once the probing
    socket is closed the kernel may hand the same port to the next bind(0), and two parts told to
    listen on one port cannot both start (a relay and an API did, in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _ports_given:
            _ports_given.add(port)
            return port


class _Mailbox:
    """aiosmtpd handler: keeps every message, tells the demo about each."""

    def __init__(self, on_mail: Callable[[EmailMessage], None]):
        self.messages: list[EmailMessage] = []
        self.on_mail = on_mail

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        self.on_mail(msg)  # type: ignore[arg-type]
        return "250 OK"


@dataclass
class DemoOptions:
    parked_s: int = 160  # the car stays this long in the clip
    idle_s: float = 125.0  # the charger stays SuspendedEV this long before stopping
    step_s: float = 2.0  # pause between the charger's other steps
    grace_min: int = 1
    fee_per_min: str = "1.00"
    port: int = 8080
    plate_list: str | None = None  # "white" or "black": put the clip's plate on that list first
    recognizer: Any = None  # a picklable factory; default: the configured ONNX + OCR pipeline
    # notifications.retry_* settings for the outbox (e.g. a short backoff in tests); default: the product's.
    outbox_retry: dict[str, Any] = field(default_factory=dict)
    # Called with the stack once the service is up, just before the charge point connects (e.g. mail_down()).
    before_charging: Callable[[DemoStack], None] | None = None


@dataclass
class DemoStack:
    workdir: Path
    opts: DemoOptions = field(default_factory=DemoOptions)
    say: Callable[[str], None] = print
    mailbox: _Mailbox | None = None
    base_url: str = ""
    db_url: str = ""
    smtp_port: int = 0
    _smtp_ctl: Any = None
    _stoppers: list[Callable[[], None]] = field(default_factory=list)

    # --- parts -------------------------------------------------------------------------------

    def _clip(self) -> Path:
        clip = self.workdir / f"demo_{self.opts.parked_s}s_v3.mp4"  # v3: the photo in fixtures/
        if not clip.is_file():
            if shutil.which("ffmpeg") is None:
                raise RuntimeError("ffmpeg is needed to build the demo clip (apt-get install ffmpeg)")
            self.say("building the camera clip from a real photo...")
            subprocess.run([sys.executable, str(REPO / "fixtures" / "make_fixtures.py"), "--out", str(self.workdir),
                            "--name", clip.name, "--parked-s", str(self.opts.parked_s),
                            # The worker calls a car gone after 30 s of empty bay: keep the stream going.
                            "--empty-s", "90"], check=True, timeout=600)
        return clip

    def _rtsp(self, clip: Path) -> str:
        cmd = ["/usr/bin/python3", "-P", str(REPO / "anpr" / "rtsp_server.py"), str(clip), "--port", "0",
               "--mount", "cam"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            proc.kill()
            raise RuntimeError(f"the RTSP server did not start: {line!r} (is gir1.2-gst-rtsp-server-1.0 installed?)")

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

        self._stoppers.append(stop)
        return line.split()[1]

    def _smtp(self) -> int:
        self.smtp_port = free_port()
        self.mailbox = _Mailbox(lambda m: self.say(f"MAIL to {m['To']}: {m['Subject']}"))
        self.mail_up()
        self._stoppers.append(self.mail_down)
        return self.smtp_port

    def mail_up(self) -> None:
        """Start the local SMTP server on its port (again, after mail_down); the mailbox keeps what came before."""
        from aiosmtpd.controller import Controller

        if self._smtp_ctl is None:
            assert self.mailbox is not None and self.smtp_port
            ctl = Controller(self.mailbox, hostname="127.0.0.1", port=self.smtp_port)
            ctl.start()
            self._smtp_ctl = ctl

    def mail_down(self) -> None:
        """Stop the local SMTP server: its port is closed until mail_up()."""
        ctl, self._smtp_ctl = self._smtp_ctl, None
        if ctl is not None:
            ctl.stop()

    def settings(self, rtsp_url: str, smtp_port: int, csms_port: int) -> Any:
        from models.settings import load_settings

        o = self.opts
        return load_settings(
            None,
            data_dir=str(self.workdir / "data"),
            port=o.port,
            site_name="Baywarden demo site",
            components={"api": True, "scheduler": True, "cameras": True, "relay": True, "enforcement": True},
            relay={"port": free_port(), "upstreams": [{"pattern": "*", "url": f"ws://127.0.0.1:{csms_port}"}]},
            cameras=[{"name": "demo-cam", "url": rtsp_url, "fps": 5,
                      "zones": [{"bay_id": "B1", "polygon": CLIP_BAY}]}],
            # The demo's one car (a UK vanity plate on a real photo) is read at about 0.98 per frame; frames taken
            # while it reverses in lower its visit's confidence (0.85 to 0.99 measured). A demo must not wait for
            # an operator, so it reviews below 0.7; a real site keeps the default 0.99 and this penalty would wait.
            enforcement={"rules": {"idle_grace_min": o.grace_min, "idle_fee_per_min": o.fee_per_min,
                                   "idle_fee_cap": "30.00", "currency": "EUR", "parked_without_charging_grace_min": 5,
                                   "confirmation_threshold": 0.7},
                         "bays": [{"bay_id": "B1", "charge_point_id": "CP-DEMO", "connector_id": 1}],
                         "sweep_every_s": 1},
            mail={"host": "127.0.0.1", "port": smtp_port, "security": "none", "from_address": "notices@example.org"},
            notifications={"public_url": f"http://127.0.0.1:{o.port}", "dispatch_every_s": 1, **o.outbox_retry},
        )

    def _seed(self, settings: Any) -> None:
        from sqlmodel import Session

        from baywarden.service import ensure_first_admin, prepare_database
        from models.base import utcnow
        from models.db import make_engine
        from models.tables import ListEntry, Vehicle

        prepare_database(settings)
        created = ensure_first_admin(settings)
        if created:
            self.say(f"dashboard user 'admin', password in {created}")
        engine = make_engine(settings.db_url)
        with Session(engine) as db:
            if db.get(Vehicle, PLATE) is None:
                db.add(Vehicle(plate=PLATE, owner_name="Demo Driver", email="driver@example.org", created_at=utcnow()))
            if self.opts.plate_list:
                db.add(ListEntry(list=self.opts.plate_list, plate=PLATE, reason="demo", priority=9,
                                 created_at=utcnow()))
            db.commit()
        engine.dispose()

    def _serve(self, settings: Any) -> None:
        import uvicorn

        from api.app import create_app

        app = create_app(settings, recognizer=self.opts.recognizer)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None,
                                               lifespan="on"))
        thread = threading.Thread(target=server.run, name="demo-service", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.1)
        self.app = app

        def stop() -> None:
            server.should_exit = True
            thread.join(30)

        self._stoppers.append(stop)

    # --- the scenario ------------------------------------------------------------------------

    async def run(self) -> Any:
        from ocpp_link.demo_csms import DemoCsms
        from ocpp_link.simulator import run_scenario

        self.workdir.mkdir(parents=True, exist_ok=True)
        clip = self._clip()
        csms = DemoCsms()
        csms_port = await csms.start()
        try:
            smtp_port = self._smtp()
            settings = self.settings("rtsp://0.0.0.0/placeholder", smtp_port, csms_port)
            self._seed(settings)
            rtsp = self._rtsp(clip)  # the clip starts now: empty bay, then the car arrives
            settings = self.settings(rtsp, smtp_port, csms_port)
            self.db_url = settings.db_url
            self._serve(settings)
            self.base_url = f"http://127.0.0.1:{settings.port}"
            self.say(f"service on {self.base_url}; camera {rtsp}; relay ws://127.0.0.1:{settings.relay.port}/ocpp")
            await asyncio.sleep(6)  # the car rolls in before the driver plugs in
            if self.opts.before_charging is not None:
                await asyncio.to_thread(self.opts.before_charging, self)
            self.say("charge point CP-DEMO: boot, plug in, charge, then idle...")
            await run_scenario(f"ws://127.0.0.1:{settings.relay.port}/ocpp", "CP-DEMO", "1.6",
                               step_delay=self.opts.step_s, delays={"StatusNotification SuspendedEV": self.opts.idle_s})
            self.say("charge point CP-DEMO: unplugged; waiting for the car to leave...")
            return settings
        finally:
            await csms.stop()

    def stop(self) -> None:
        while self._stoppers:
            with contextlib.suppress(Exception):
                self._stoppers.pop()()

