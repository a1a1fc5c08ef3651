"""Turn many per-frame plate reads of one bay into one presence: arrival, heartbeats, departure.

Pure logic with an injected clock: no I/O, no threads; the worker feeds it, tests drive it with a
fake clock. One bay holds at most one track:

    (no track) --sighting--> pending --N identical reads, or timeout--> arrived --empty D s--> (gone)
                                 \\--empty D s, never arrived: dropped silently (a passer-by)

* A *sighting* is a frame in which the recogniser found a plate box inside the bay, readable or
  not; presence is based on sightings, so an unreadable plate still arrives (plate=None).
* The text is chosen by voting: reads are grouped by similarity (rapidfuzz), the heaviest group
  wins (weight = OCR confidence), then each character position is voted separately among reads of
  the winning length, which repairs the typical one-character OCR slip. A character's confidence is
  its vote share times the mean OCR confidence of the reads that voted for it.
* Departure needs the bay to be *looked at* and found empty at least `depart_after_s` after the last
  sighting. A bay nobody looked at (camera down, motion gate idle) is not an empty bay.
* A different plate read steadily in an occupied bay (`change_reads` frames) closes the old track
  and opens a new one, so a quick swap within `depart_after_s` is not merged into one visit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rapidfuzz import fuzz

from models.base import Clock, IdFactory, new_id
from models.events import Evidence, VehicleArrived, VehicleDeparted, VehicleStillPresent

log = logging.getLogger(__name__)

PresenceEvent = VehicleArrived | VehicleStillPresent | VehicleDeparted


@dataclass(frozen=True)
class GroupingOptions:
    min_agreeing: int = 3  # identical reads that make a text stable
    arrival_timeout_s: float = 15.0  # then arrive with the best text so far, or plate=None
    min_sightings: int = 2  # a presence needs this many sightings before it can time out into an arrival
    depart_after_s: float = 30.0  # bay seen empty this long after the last sighting -> departed
    heartbeat_s: float = 300.0  # VehicleStillPresent period while the vehicle is still being seen
    similarity: float = 70.0  # rapidfuzz ratio (0-100) above which two texts are one plate
    change_reads: int = 3  # frames in a row with a different, confident plate -> new vehicle
    change_min_confidence: float = 0.6  # reads below this never count as "a different plate"
    max_reads: int = 300  # reads kept per track (a car parked all day must not grow memory)


@dataclass(frozen=True)
class Read:
    """One plate box seen in one bay on one frame."""

    text: str | None
    confidence: float
    char_confidences: tuple[float, ...] = ()
    det_confidence: float = 1.0
    box: tuple[float, float, float, float] | None = None
    ref: Any = field(default=None, compare=False)  # opaque to grouping; handed to the evidence callback


@dataclass(frozen=True)
class Vote:
    text: str | None
    confidence: float
    char_confidences: tuple[float, ...]
    agreeing: int  # reads whose text is exactly `text`
    best: Read | None  # the read to use as evidence


_MAX_TEXTS = 40  # distinct spellings considered by one vote (pairwise comparison is quadratic)
_Frame = tuple[datetime, list[Read]]
EvidenceFn = Callable[[str, Read, datetime], Evidence]  # (presence_id, best read, at) -> saved paths


def vote(reads: Sequence[Read], similarity: float = 70.0) -> Vote:
    """Best text of a set of reads: similarity groups, then per-position weighted voting."""
    readable = [r for r in reads if r.text]
    if not readable:
        best = max(reads, key=lambda r: r.det_confidence, default=None)
        return Vote(None, 0.0, (), 0, best)
    weight: dict[str, float] = {}
    for r in readable:
        assert r.text is not None
        weight[r.text] = weight.get(r.text, 0.0) + max(r.confidence, 1e-3)
    # Single-linkage groups: a spelling joins a group if it is close to any member, so two reads
    # that each differ from the truth in a different character still meet through it.
    texts = sorted(weight, key=lambda t: (-weight[t], t))[:_MAX_TEXTS]
    parent = {t: t for t in texts}

    def root(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            if fuzz.ratio(a, b) >= similarity:
                parent[root(b)] = root(a)
    groups: dict[str, list[str]] = {}
    for t in texts:
        groups.setdefault(root(t), []).append(t)
    members = max(groups.values(), key=lambda g: (sum(weight[t] for t in g), -texts.index(g[0])))
    cluster = [r for r in readable if r.text in members]
    by_len: dict[int, float] = {}
    for r in cluster:
        by_len[len(r.text or "")] = by_len.get(len(r.text or ""), 0.0) + max(r.confidence, 1e-3)
    length = max(by_len, key=lambda n: (by_len[n], n))
    same = [r for r in cluster if len(r.text or "") == length]
    chars: list[str] = []
    char_conf: list[float] = []
    for i in range(length):
        votes: dict[str, list[float]] = {}
        for r in same:
            c = r.char_confidences[i] if len(r.char_confidences) == length else r.confidence
            votes.setdefault((r.text or "")[i], []).append(max(c, 1e-3))
        total = sum(sum(v) for v in votes.values())
        ch, vs = max(votes.items(), key=lambda kv: (sum(kv[1]), kv[0]))
        chars.append(ch)
        char_conf.append(round(sum(vs) / total * (sum(vs) / len(vs)), 4))
    text = "".join(chars)
    agreeing = sum(1 for r in readable if r.text == text)
    exact = [r for r in readable if r.text == text]
    best = max(exact or cluster, key=lambda r: (r.confidence, r.det_confidence))
    conf = min(char_conf) if char_conf else 0.0
    return Vote(text, min(1.0, max(0.0, conf)), tuple(min(1.0, c) for c in char_conf), agreeing, best)


@dataclass
class Track:
    presence_id: str
    first_seen: datetime
    last_seen: datetime  # last sighting of this vehicle (for a known plate: last matching read)
    reads: deque[Read]
    sightings: int = 1
    arrived: bool = False
    plate: str | None = None
    confidence: float = 0.0
    last_beat: datetime | None = None
    streak: list[_Frame] = field(default_factory=list)  # recent frames that showed a different plate


class PresenceGrouper:
    """All bays of one camera. Call `observe()` for every bay the worker looked at, `tick()` often."""

    def __init__(
        self,
        camera: str,
        options: GroupingOptions | None = None,
        *,
        clock: Clock,
        new_id: IdFactory = new_id,
        evidence: EvidenceFn | None = None,
    ) -> None:
        self.camera = camera
        self.opts = options or GroupingOptions()
        self._clock = clock
        self._new_id = new_id
        self._evidence = evidence
        self._tracks: dict[str, Track] = {}

    def track(self, bay_id: str) -> Track | None:
        return self._tracks.get(bay_id)

    def observe(self, bay_id: str, reads: Sequence[Read]) -> list[PresenceEvent]:
        """The bay was looked at now; `reads` are the plate boxes found in it (empty: bay empty)."""
        now = self._clock()
        out: list[PresenceEvent] = []
        track = self._tracks.get(bay_id)
        if not reads:
            if track is not None and now - track.last_seen >= timedelta(seconds=self.opts.depart_after_s):
                out += self._close(bay_id, track, now)
            return out
        if track is None:
            track = self._open(bay_id, now, reads)
        elif track.arrived and track.plate is not None:
            changed = self._check_change(track, now, reads)
            if changed is not None:
                out += self._close(bay_id, track, now)
                track = self._open(bay_id, changed[0][0], [r for _, rs in changed for r in rs])
                track.sightings = len(changed)
                track.last_seen = now
        else:
            self._add(track, now, reads)
        out += self._step(bay_id, track, now)
        return out

    def tick(self) -> list[PresenceEvent]:
        """Arrival timeouts and heartbeats; the worker calls it whether or not a frame came."""
        now = self._clock()
        out: list[PresenceEvent] = []
        for bay_id, track in list(self._tracks.items()):
            out += self._step(bay_id, track, now)
        return out

    # --- internals ----------------------------------------------------------------------------

    def _open(self, bay_id: str, now: datetime, reads: Sequence[Read]) -> Track:
        track = Track(self._new_id(), now, now, deque(reads, maxlen=self.opts.max_reads))
        self._tracks[bay_id] = track
        return track

    def _add(self, track: Track, now: datetime, reads: Sequence[Read]) -> None:
        track.reads.extend(reads)
        track.sightings += 1
        track.last_seen = now

    def _check_change(self, track: Track, now: datetime, reads: Sequence[Read]) -> list[_Frame] | None:
        """Feed an arrived track; return the streak of frames if a different vehicle took its place."""
        assert track.plate is not None
        confident = [r for r in reads if r.text and r.confidence >= self.opts.change_min_confidence]
        same = [r for r in reads if r.text and fuzz.ratio(r.text, track.plate) >= self.opts.similarity]
        if same or not confident:  # our car (or nothing conclusive): it is still here
            track.streak.clear()
            self._add(track, now, reads)
            return None
        track.streak.append((now, confident))
        if len(track.streak) < self.opts.change_reads:
            return None
        v = vote([r for _, rs in track.streak for r in rs], self.opts.similarity)
        if v.text is not None and v.agreeing >= self.opts.change_reads:
            return list(track.streak)
        return None

    def _step(self, bay_id: str, track: Track, now: datetime) -> list[PresenceEvent]:
        if not track.arrived:
            v = vote(track.reads, self.opts.similarity)
            stable = v.text is not None and v.agreeing >= self.opts.min_agreeing
            timed_out = now - track.first_seen >= timedelta(seconds=self.opts.arrival_timeout_s)
            if stable or (timed_out and track.sightings >= self.opts.min_sightings):
                return [self._arrive(bay_id, track, v, now)]
            if timed_out and now - track.last_seen >= timedelta(seconds=self.opts.depart_after_s):
                del self._tracks[bay_id]  # one stray sighting long ago: forget it
            return []
        last_beat = track.last_beat or track.first_seen
        if now - last_beat >= timedelta(seconds=self.opts.heartbeat_s) and track.last_seen > last_beat:
            track.last_beat = now
            return [
                VehicleStillPresent(
                    at=now,
                    presence_id=track.presence_id,
                    camera=self.camera,
                    bay_id=bay_id,
                    plate=track.plate,
                    confidence=track.confidence,
                    since=track.first_seen,
                )
            ]
        return []

    def _arrive(self, bay_id: str, track: Track, v: Vote, now: datetime) -> VehicleArrived:
        track.arrived = True
        track.plate, track.confidence = v.text, v.confidence
        track.last_beat = now
        evidence = Evidence()
        if self._evidence is not None and v.best is not None:
            try:
                evidence = self._evidence(track.presence_id, v.best, now)
            except Exception:  # evidence is a nice-to-have; the arrival must still go out
                log.exception("camera %s bay %s: saving evidence failed", self.camera, bay_id)
        return VehicleArrived(
            at=now,
            presence_id=track.presence_id,
            camera=self.camera,
            bay_id=bay_id,
            plate=v.text,
            confidence=v.confidence,
            char_confidences=v.char_confidences,
            evidence=evidence,
        )

    def _close(self, bay_id: str, track: Track, at: datetime) -> list[PresenceEvent]:
        del self._tracks[bay_id]
        if not track.arrived:
            return []
        return [
            VehicleDeparted(
                at=at,
                presence_id=track.presence_id,
                camera=self.camera,
                bay_id=bay_id,
                plate=track.plate,
                first_seen=track.first_seen,
                last_seen=track.last_seen,
            )
        ]
