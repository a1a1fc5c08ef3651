"""Access points (gates): whitelisted cars are admitted, others refused."""

from __future__ import annotations

from datetime import datetime

from enforcement.decide.model import _PRIORITY, AccessDecision, RaiseAlert, _remember, _stamp
from enforcement.lists import match_plate, normalise_plate, plate_distance
from models.events import VehicleArrived


class AccessRules:
    """Access points (gates): whitelisted cars are admitted, others refused."""

    # Attributes and helpers of _Run (enforcement.decide.run) are used through self.
    def on_access(self, ev: VehicleArrived, t: datetime) -> None:
        s = self.state
        if ev.presence_id in s.closed_presences:
            return
        self._set(closed_presences=_remember(s.closed_presences, ev.presence_id))
        rules = self.ctx.rules
        plate = normalise_plate(ev.plate)
        fuzzy = rules.fuzzy_distance
        white = match_plate(plate, self.ctx.whitelist, fuzzy, t)
        black = match_plate(plate, self.ctx.blacklist, fuzzy, t)
        bans = [] if plate is None else [o for o in self.ctx.recent_overstays if o.ended_at <= t < o.until]
        ban = min(
            (o for o in bans if plate_distance(plate or "", o.plate, fuzzy) <= fuzzy),
            key=lambda o: (plate_distance(plate or "", o.plate, fuzzy), -o.ended_at.timestamp(), o.visit_id),
            default=None,
        )
        base = {"bay_id": s.bay_id, "plate": plate, "at": t}
        if black is not None:  # at a gate the blacklist wins over a whitelist: it is the security list
            self.out.append(
                RaiseAlert(kind="blacklist", priority=black.entry.priority, detail=black.entry.reason, **base)
            )
            accepted, reason = False, f"blacklisted: {black.entry.reason}"
        elif white is not None:
            accepted, reason = True, "whitelisted"
        elif ban is not None:
            detail = f"return ban after overstay {ban.visit_id} until {_stamp(ban.until)}"
            self.out.append(RaiseAlert(kind="return_ban", priority=_PRIORITY["return_ban"], detail=detail, **base))
            accepted, reason = False, detail
        else:
            # An access point admits permit holders only: anyone else, or an unreadable plate, is refused.
            accepted, reason = False, "plate unreadable" if plate is None else "not on the whitelist"
        self.out.append(AccessDecision(presence_id=ev.presence_id, accepted=accepted, reason=reason, **base))

    # closing ---------------------------------------------------------------------------------
