"""Retention: personal data (reads, presences, evidence images) is kept only as long as configured."""

from datetime import timedelta

from sqlmodel import Session, select

from models.db import upgrade
from models.tables import AuditLog, PlateReadRow, Presence, TimerRow
from service.build import build_context
from service.scheduler import purge_expired
from tests.foundation.helpers import make_settings


def test_purge_respects_each_setting(tmp_path, db_url, clock):
    settings = make_settings(tmp_path, db_url, retention={"evidence_days": 7, "reads_days": 30, "audit_days": 60})
    upgrade(settings.db_url)
    ctx = build_context(settings, clock=clock, components=[])
    now = clock()
    old, recent = now - timedelta(days=31), now - timedelta(days=2)
    with ctx.session() as db:
        for at in (old, recent):
            db.add(PlateReadRow(at=at, camera="gate", plate="AB123CD"))
            db.add(Presence(id=f"p{at.day}", camera="gate", bay_id="B1", first_seen=at, last_seen=at, departed_at=at))
        db.add(Presence(id="still-here", camera="gate", bay_id="B2", first_seen=old, last_seen=now))
        db.add(AuditLog(at=now - timedelta(days=61), actor="x", action="y", entity="z"))
        db.add(AuditLog(at=now - timedelta(days=59), actor="x", action="y", entity="z"))
        for name, state, due in (("old-done", "done", old), ("recent-done", "done", recent),
                                 ("old-pending", "pending", old)):
            db.add(TimerRow(timer_id=name, bay_id="B1", visit_id="v", kind="overstay", due_at=due, state=state))
        db.commit()
    for days_ago in (8, 6):
        d = settings.evidence_dir / "gate" / (now - timedelta(days=days_ago)).date().isoformat()
        d.mkdir(parents=True)
        (d / "a-frame.jpg").write_bytes(b"\xff\xd8\xff")
    counts = purge_expired(ctx)
    assert counts["reads"] == 1 and counts["presences"] == 1 and counts["audit"] == 1
    assert counts["evidence_files"] == 1 and counts["timers"] == 1
    with Session(ctx.engine) as db:
        assert sorted(t.timer_id for t in db.exec(select(TimerRow))) == ["old-pending", "recent-done"]
        assert [r.at for r in db.exec(select(PlateReadRow))] == [recent]
        assert sorted(p.id for p in db.exec(select(Presence))) == sorted([f"p{recent.day}", "still-here"])
        assert len(list(db.exec(select(AuditLog)))) == 1
    days = sorted(p.name for p in (settings.evidence_dir / "gate").iterdir())
    assert days == [(now - timedelta(days=6)).date().isoformat()]
    ctx.engine.dispose()
