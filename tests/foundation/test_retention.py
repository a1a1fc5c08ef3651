"""Retention: personal data (reads, presences, visits, penalties, notifications, evidence images) is kept only as
long as configured, and what a kept penalty rests on as long as the penalty."""

from datetime import timedelta

from sqlmodel import Session, select

from models.db import upgrade
from models.outbox import OutboxChannel, OutboxMessage, OutboxState, PushSubscription
from models.tables import AccessLog, Alert, AuditLog, Penalty, PlateReadRow, Presence, TimerRow, VisitRow
from service.build import build_context
from service.retention import purge_expired
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


def test_a_kept_penalty_holds_its_visit_presences_and_evidence(tmp_path, db_url, clock):
    """Evidence, presences and visits follow their own retention, except what a penalty still rests on: an open
    penalty (here disputed) keeps them however old; a settled one keeps them `penalties_days`, then all goes."""
    settings = make_settings(tmp_path, db_url, retention={"evidence_days": 7, "reads_days": 30,
                                                          "penalties_days": 60, "audit_days": 60})
    upgrade(settings.db_url)
    ctx = build_context(settings, clock=clock, components=[])
    now = clock()
    long_ago = now - timedelta(days=100)
    day = long_ago.date().isoformat()

    def visit(db, vid, departed, state=None, settled_days_ago=0, plate="AB123CD"):
        pids = [f"{vid}-a", f"{vid}-b"]
        db.add(VisitRow(visit_id=vid, bay_id="B1", plate=plate, arrived_at=long_ago, departed_at=departed,
                        data={"presence_id": pids[-1], "presence_ids": pids}, updated_at=long_ago))
        for pid in pids:
            db.add(Presence(id=pid, camera="gate", bay_id="B1", first_seen=long_ago, last_seen=long_ago,
                            departed_at=long_ago, crop_path=f"gate/{day}/{pid}-crop.jpg",
                            frame_path=f"gate/{day}/{pid}-frame.jpg"))
        if state:
            at = now - timedelta(days=settled_days_ago)
            db.add(Penalty(violation_id=f"{vid}:idle", visit_id=vid, bay_id="B1", kind="idle", plate=plate,
                           started_at=long_ago, state=state, created_at=long_ago, updated_at=at))

    with ctx.session() as db:
        visit(db, "disputed", long_ago, "disputed", settled_days_ago=95, plate="OPEN1")
        visit(db, "paid-long-ago", long_ago, "paid", settled_days_ago=61, plate="PAID1")
        visit(db, "waived-lately", long_ago, "waived", settled_days_ago=59)
        visit(db, "no-penalty", now - timedelta(days=31))
        visit(db, "no-penalty-young", now - timedelta(days=29))
        visit(db, "still-there", None)
        for sub_id, owner, expired, updated in (("gone-expired", "X", now - timedelta(days=31), now),
                                                ("owner-settled", "PAID1", None, now - timedelta(days=61)),
                                                ("owner-open", "OPEN1", None, now - timedelta(days=61))):
            db.add(PushSubscription(id=sub_id, endpoint=f"https://push.example/{sub_id}", p256dh="k", auth="a",
                                    owner=owner, expired_at=expired, created_at=updated))
        for key, state, when in (("sent-old", OutboxState.sent, 31), ("sent-young", OutboxState.sent, 29),
                                 ("dead-old", OutboxState.dead, 31), ("pending-old", OutboxState.pending, 31)):
            at = now - timedelta(days=when)
            db.add(OutboxMessage(idempotency_key=key, channel=OutboxChannel.email, recipient="d@example.org",
                                 template="notice", state=state, created_at=at, last_attempt_at=at,
                                 sent_at=at if state == OutboxState.sent else None))
        for days_ago, acked in ((31, True), (31, False), (29, True)):
            at = now - timedelta(days=days_ago)
            db.add(Alert(at=at, kind="blacklist", title=f"{days_ago} {acked}", subject="AB123CD",
                         acknowledged_at=at if acked else None))
            db.add(AccessLog(at=at, bay_id="B1", presence_id="p", plate="AB123CD", accepted=acked))
        db.commit()
    folder = settings.evidence_dir / "gate" / day
    folder.mkdir(parents=True)
    kept = {f"{v}-{x}-{kind}.jpg" for v in ("disputed", "waived-lately") for x in "ab" for kind in ("crop", "frame")}
    for name in kept | {"paid-long-ago-a-crop.jpg", "no-penalty-b-frame.jpg", ".tmp-half.jpg"}:
        (folder / name).write_bytes(b"\xff\xd8\xff")

    counts = purge_expired(ctx)
    assert counts["penalties"] == 1 and counts["visits"] == 2 and counts["notifications"] == 2
    with Session(ctx.engine) as db:
        assert sorted(p.violation_id for p in db.exec(select(Penalty))) == ["disputed:idle", "waived-lately:idle"]
        assert sorted(v.visit_id for v in db.exec(select(VisitRow))) == [
            "disputed", "no-penalty-young", "still-there", "waived-lately"]
        # presences departed 100 days ago: only those of visits with a penalty left
        assert sorted(p.id for p in db.exec(select(Presence))) == [
            "disputed-a", "disputed-b", "waived-lately-a", "waived-lately-b"]
        assert sorted(m.idempotency_key for m in db.exec(select(OutboxMessage))) == ["pending-old", "sent-young"]
        assert sorted(a.title for a in db.exec(select(Alert))) == ["29 True", "31 False"]
        assert len(list(db.exec(select(AccessLog)))) == 1
        assert [s.id for s in db.exec(select(PushSubscription))] == ["owner-open"]
    assert {p.name for p in folder.iterdir()} == kept  # the rest of that day went

    # Settled, and its penalties_days over: the last hold goes, and the day folder with it.
    with ctx.session() as db:
        p = db.get(Penalty, "disputed:idle")
        p.state, p.updated_at = "waived", now - timedelta(days=61)
        db.add(p)
        p = db.get(Penalty, "waived-lately:idle")
        p.updated_at = now - timedelta(days=61)
        db.add(p)
        db.commit()
    counts = purge_expired(ctx)
    assert counts["penalties"] == 2 and counts["presences"] == 4 and counts["evidence_files"] == 1
    assert not (settings.evidence_dir / "gate").exists()
    ctx.engine.dispose()
