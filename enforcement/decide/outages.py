"""Camera outages: holding timers while no camera sees the bay, and closing visits nobody sees again."""

from __future__ import annotations

from datetime import datetime, timedelta

from enforcement.decide.model import _PRIORITY, CameraStatus, Outage, RaiseAlert
from models.events import CameraStateChanged


class OutageRules:
    """Camera outages: holding timers while no camera sees the bay, and closing visits nobody sees again."""

    # Attributes and helpers of _Run (enforcement.decide.run) are used through self.
    def on_camera_state(self, ev: CameraStateChanged, t: datetime) -> None:
        if ev.camera not in self.state.cameras:
            return
        prev = next((c for c in self.state.camera_status if c.camera == ev.camera), None)
        if prev is not None and (prev.state == ev.state or t < prev.at):
            return  # duplicate or stale
        was_unobserved = self.state.unobserved
        self.advance(t, t)
        others = [c for c in self.state.camera_status if c.camera != ev.camera]
        status = tuple(sorted([*others, CameraStatus(camera=ev.camera, state=ev.state, at=t)], key=lambda c: c.camera))
        self._set(camera_status=status)
        v = self.visit
        if v is None:
            return
        if self.state.unobserved and not was_unobserved:
            self._visit_update(outage_since=v.outage_since or t, outages=(*v.outages, Outage(start=t)))
            self.note(t, "camera_down", f"{ev.camera} {ev.state} {ev.detail}".strip() + "; no departure inferred")
        elif was_unobserved and not self.state.unobserved:
            outs = v.outages
            if outs and outs[-1].end is None:
                outs = (*outs[:-1], outs[-1].model_copy(update={"end": t}))
            self._visit_update(outages=outs)
            self.note(t, "camera_up", ev.camera)
            if v.outage_since is not None:
                self._schedule("presence_check", t + timedelta(minutes=v.rules.camera_recover_min))
        if ev.state == "failed":
            v = self._open_visit()
            self.out.append(
                RaiseAlert(
                    kind="camera_down",
                    priority=_PRIORITY["camera_down"],
                    bay_id=v.bay_id,
                    plate=v.plate,
                    visit_id=v.visit_id,
                    at=t,
                    detail=f"camera {ev.camera} failed during a visit: {ev.detail}".strip(),
                )
            )
