"""The FTP intake with a real FTP client (ftplib): a camera uploads a JPEG named after its read; the
read becomes our events with the picture as evidence; a name that does not match, a wrong password
and anything but storing are refused, counted, and leave nothing behind."""

from __future__ import annotations

import asyncio
import ftplib
import io
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from baywarden.demo import free_port
from models.db import upgrade
from models.tables import SourceCounter, StoredEvent
from service.build import build_context
from service.ftp_intake import FtpIntakeComponent
from tests.foundation.helpers import make_settings
from tests.sources.test_intake_http import jpeg

SECRET = "ftp-secret-0123456789"
PATTERN = r"^(?P<camera>[^_]+)_(?P<time>\d{14})_(?P<plate>[A-Z0-9]+)\.jpg$"


@pytest.mark.timeout(60)
def test_a_camera_uploads_reads_over_ftp(tmp_path, sqlite_url):
    port, passive = free_port(), free_port()
    settings = make_settings(
        tmp_path, sqlite_url, ftp={"port": port, "passive_ports": f"{passive}-{passive}"},
        sources=[{"name": "cam1", "kind": "ftp", "secret": SECRET, "file_pattern": PATTERN, "utc_offset_min": 60,
                  "cameras": [{"id": "lane7", "bay_id": "B1"}]}],
    )
    upgrade(sqlite_url)
    ctx = build_context(settings, components=[])
    ftp_part = FtpIntakeComponent(ctx)
    picture = jpeg()

    async def main() -> None:
        await ftp_part.start()
        try:
            await asyncio.to_thread(session)
        finally:
            await ftp_part.stop()

    def session() -> None:
        with pytest.raises(ftplib.error_perm, match="530"):
            (ftplib.FTP().connect("127.0.0.1", port, timeout=10) and None) or _login(port, "cam1", "wrong")
        ftp = _login(port, "cam1", SECRET)
        ftp.storbinary("STOR lane7_20261206100000_AB123CD.jpg", io.BytesIO(picture))
        ftp.storbinary("STOR holiday-photo.jpg", io.BytesIO(picture))  # stored, then refused by its name
        with pytest.raises(ftplib.error_perm, match="550"):
            ftp.nlst()  # no listing of what others uploaded
        with pytest.raises(ftplib.error_perm, match="550"):
            ftp.retrbinary("RETR lane7_20261206100000_AB123CD.jpg", lambda b: None)
        ftp.quit()

    asyncio.run(main())
    with Session(ctx.engine) as db:
        events = list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))
        counter = db.get(SourceCounter, "cam1")
    ctx.engine.dispose()
    assert [e.kind for e in events] == ["plate_read", "vehicle_arrived"]
    arrived = events[1].payload
    assert arrived["plate"] == "AB123CD" and arrived["bay_id"] == "B1" and arrived["camera"] == "cam1:lane7"
    assert datetime.fromisoformat(arrived["at"]) == datetime(2026, 12, 6, 9, 0, tzinfo=UTC)  # camera at UTC+1
    assert arrived["confidence"] == 0.5  # no score in a file name: never enough to skip review
    assert (settings.evidence_dir / arrived["evidence"]["frame_path"]).read_bytes() == picture
    assert counter.accepted == 1 and counter.rejected == 1 and "does not match" in counter.last_error
    assert list((settings.data_dir / "ftp-incoming" / "cam1").iterdir()) == []  # nothing left behind


def _login(port: int, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=10)
    ftp.login(user, password)
    return ftp
