"""Regions: what plates look like where a camera stands, used only to re-rank and repair reads.

A region never shortens or lengthens a read. It may
* swap look-alike characters (O/0, I/1, B/8, ...) where every format of the region that fits the read's
  length wants the other class at that position (`PlateFormat.fix`, which keeps the length);
* refuse a read outright that no plate of the region can be (too short or long, a state name or slogan
  on a US plate), so that another reader's text or the operator takes over;
* prefer, between two readers' texts, the one that fits a format of the region.

`anpr.region` in the settings takes one region or several (`eu,uk`); a camera may override it.
`generic` accepts any 2-10 characters and changes nothing, so it can never measure worse than the raw
recogniser output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from anpr.plates import KNOWN_FORMATS, PlateFormat, normalize
from anpr.plates import _format_bonus as format_bonus

# Written from the states' names and the slogans printed on their standard plates (public DMV pages),
# not from any evaluation set: a read that is exactly one of these is the plate's decoration.
US_DECORATIONS = frozenset(
    normalize(w)
    for w in (
        "ALABAMA", "ALASKA", "ARIZONA", "ARKANSAS", "CALIFORNIA", "COLORADO", "CONNECTICUT", "DELAWARE",
        "FLORIDA", "GEORGIA", "HAWAII", "IDAHO", "ILLINOIS", "INDIANA", "IOWA", "KANSAS", "KENTUCKY",
        "LOUISIANA", "MAINE", "MARYLAND", "MASSACHUSETTS", "MICHIGAN", "MINNESOTA", "MISSISSIPPI",
        "MISSOURI", "MONTANA", "NEBRASKA", "NEVADA", "NEW HAMPSHIRE", "NEW JERSEY", "NEW MEXICO", "NEW YORK",
        "NORTH CAROLINA", "NORTH DAKOTA", "OHIO", "OKLAHOMA", "OREGON", "PENNSYLVANIA", "RHODE ISLAND",
        "SOUTH CAROLINA", "SOUTH DAKOTA", "TENNESSEE", "TEXAS", "UTAH", "VERMONT", "VIRGINIA",
        "WASHINGTON", "WEST VIRGINIA", "WISCONSIN", "WYOMING", "DISTRICT OF COLUMBIA",
        "USA", "AMERICA", "AMERICAN", "STATE", "COUNTY", "DEALER", "TEMPORARY", "TRUCK", "PASSENGER",
        "SUNSHINE STATE", "EMPIRE STATE", "GARDEN STATE", "LAND OF LINCOLN", "GREAT LAKES", "LONE STAR STATE",
        "THE FIRST STATE", "FIRST STATE", "FAMOUS POTATOES", "LIVE FREE OR DIE", "GREEN MOUNTAIN STATE",
        "PURE MICHIGAN", "EXPLORE MINNESOTA", "THE VOLUNTEER STATE", "VACATIONLAND", "OCEAN STATE",
        "SHOW ME STATE", "GRAND CANYON STATE", "ALOHA STATE", "PEACH STATE", "THE LAST FRONTIER",
        "LAND OF ENCHANTMENT", "BIG SKY", "BIG SKY COUNTRY", "SPORTSMANS PARADISE", "WILD WONDERFUL",
        "TAXATION WITHOUT REPRESENTATION", "DRIVE SAFELY", "BEEHIVE STATE", "SILVER STATE", "DMV",
    )
)


# Car makers' names and drive or engine words badged on cars' rears, written from the makers' own naming,
# not from any evaluation set (model names are left out: there are thousands). A read that is exactly one
# of these is the car's badge far more often than a vanity plate: it may still be reported, but never
# skips review and never makes a weak box a plate (`anpr.ensemble.combine`). Regions do not refuse them:
# which text is read never changes.
VEHICLE_BADGES = frozenset(
    normalize(w)
    for w in (
        "ACURA", "ALFA ROMEO", "ALFA", "ROMEO", "ALPINE", "ASTON MARTIN", "ASTON", "AUDI", "BENTLEY", "BUGATTI",
        "BUICK", "CADILLAC", "CHEVROLET", "CHEVY", "CHRYSLER", "CITROEN", "CUPRA", "DACIA", "DAEWOO",
        "DAIHATSU", "DODGE", "FERRARI", "FIAT", "FORD", "GEELY", "GENESIS", "HONDA", "HUMMER", "HYUNDAI",
        "INFINITI", "ISUZU", "IVECO", "JAGUAR", "JEEP", "LADA", "LAMBORGHINI", "LANCIA", "LAND ROVER", "LEXUS",
        "LINCOLN", "LOTUS", "LUCID", "MASERATI", "MAYBACH", "MAZDA", "MCLAREN", "MERCEDES", "MERCEDES BENZ",
        "BENZ", "MINI", "MITSUBISHI", "NISSAN", "OPEL", "PEUGEOT", "POLESTAR", "PONTIAC", "PORSCHE",
        "RENAULT", "RIVIAN", "ROLLS ROYCE", "ROVER", "SAAB", "SATURN", "SCION", "SEAT", "SKODA", "SMART",
        "SSANGYONG", "SUBARU", "SUZUKI", "TATA", "TESLA", "TOYOTA", "VAUXHALL", "VOLKSWAGEN", "VOLVO",
        "HYBRID", "DIESEL", "TURBO", "ELECTRIC", "QUATTRO", "4MATIC", "XDRIVE", "4MOTION", "ALLTRACK",
        "SPORT", "LIMITED", "PLUGIN", "EHYBRID",
    )
)


def is_badge(text: str) -> bool:
    """`text` is a car maker's name or a badge word (`VEHICLE_BADGES`)."""
    return normalize(text) in VEHICLE_BADGES


@dataclass(frozen=True)
class Region:
    name: str
    formats: tuple[PlateFormat, ...] = ()  # real formats (re-ranking and look-alike swaps)
    min_len: int = 2
    max_len: int = 10
    reject: frozenset[str] = field(default_factory=frozenset)

    def accepts(self, text: str) -> bool:
        return self.min_len <= len(text) <= self.max_len and text not in self.reject

    def format_of(self, text: str) -> PlateFormat | None:
        """The region's format `text` fits as it is (best prior), or None."""
        best: tuple[float, PlateFormat] | None = None
        for fmt in self.formats:
            fixed = fmt.fix(text)
            if fixed is not None and fixed[0] == text and (best is None or fixed[1] > best[0]):
                best = (fixed[1], fmt)
        return best[1] if best else None


def _fmts(*names: str) -> tuple[PlateFormat, ...]:
    return tuple(KNOWN_FORMATS[n] for n in names)


REGIONS: dict[str, Region] = {
    "eu": Region("eu", _fmts("FR/IT/SK", "DE", "UK", "PL", "ES", "RO", "CZ", "BE", "HR"), 4, 9),
    "uk": Region("uk", _fmts("UK"), 2, 7),
    "br": Region("br", _fmts("BR", "BR-Mercosul"), 7, 7),
    # The US has no single format: 2-8 characters, and never the state's name or slogan.
    "us": Region("us", (), 2, 8, US_DECORATIONS),
    "generic": Region("generic", (), 2, 10),
}


def get_regions(spec: str | Sequence[str]) -> tuple[Region, ...]:
    """Regions from `eu`, `us,br` or a list of names."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for name in names:
        if not name:
            continue
        if name not in REGIONS:
            raise ValueError(f"unknown region {name!r}; known: {', '.join(REGIONS)}")
        out.append(REGIONS[name])
    if not out:
        raise ValueError("at least one region is needed (e.g. eu, us, br, uk or generic)")
    return tuple(out)


@dataclass(frozen=True)
class RegionVerdict:
    text: str  # the read after look-alike swaps (same length as the read)
    accepted: bool  # some region accepts it
    format_name: str | None  # the real format it fits, else the accepting region's name, else None
    bonus: float = 0.0  # log prior of a real format over an arbitrary string of that length (re-ranking)


def apply_regions(text: str, regions: Sequence[Region]) -> RegionVerdict:
    """Judge one read under the camera's regions: swap look-alikes toward a format (same length only),
    and say whether any region accepts the result."""
    text = normalize(text)
    best: tuple[float, str, str] | None = None
    for region in regions:
        for fmt in region.formats:
            fixed = fmt.fix(text)
            if fixed is not None and len(fixed[0]) == len(text) and (best is None or fixed[1] > best[0]):
                best = (fixed[1], fixed[0], fmt.name)
    if best is not None and any(r.accepts(best[1]) for r in regions):
        return RegionVerdict(best[1], True, best[2], max(0.0, format_bonus(best[1], best[0])))
    accepting = next((r for r in regions if r.accepts(text)), None)
    return RegionVerdict(text, accepting is not None, accepting.name if accepting else None)


def apply_regions_exact(text: str, regions: Sequence[Region]) -> RegionVerdict:
    """Judge `text` as it is, without look-alike swaps (a reader's own text beside its repair)."""
    text = normalize(text)
    best: tuple[float, str] | None = None
    for region in regions:
        for fmt in region.formats:
            fixed = fmt.fix(text)
            if fixed is not None and fixed[0] == text and (best is None or fixed[1] > best[0]):
                best = (fixed[1], fmt.name)
    accepting = next((r for r in regions if r.accepts(text)), None)
    if best is not None and accepting is not None:
        return RegionVerdict(text, True, best[1], max(0.0, format_bonus(text, best[0])))
    return RegionVerdict(text, accepting is not None, accepting.name if accepting else None)


# Glyphs that plate fonts draw (almost) the same: a read is only as sure as the reader's ability to tell them.
NEAR_IDENTICAL = {"O": "0", "0": "O", "I": "1", "1": "I", "Z": "2", "2": "Z", "S": "5", "5": "S", "B": "8", "8": "B"}
_REAL_FORMATS = tuple(f for f in KNOWN_FORMATS.values() if f.name != "generic")


def _shape_bonus(text: str) -> float | None:
    """How plausible `text` is as a plate by its shape alone: the best known format's prior over an
    arbitrary string (size principle), or None when no known format fits it."""
    best = None
    for f in _REAL_FORMATS:
        fixed = f.fix(text)
        if fixed is not None and fixed[0] == text:
            bonus = format_bonus(text, fixed[1])
            best = bonus if best is None else max(best, bonus)
    return best


def lookalike_twin(text: str) -> str | None:
    """Another string, one near-identical glyph away, that is at least as plausible a plate by its shape
    (BA2681M is Polish, BA268IM Slovak; ABC1234 has no such twin, ABCI234 only fits the permissive German
    shape). Such a read cannot be told from its twin by the shape of the plate, so it is never sure enough
    to skip review; None when there is no twin."""
    own = _shape_bonus(text)
    for i, ch in enumerate(text):
        alt = NEAR_IDENTICAL.get(ch)
        if alt is None:
            continue
        twin = text[:i] + alt + text[i + 1 :]
        theirs = _shape_bonus(twin)
        if theirs is not None and (own is None or theirs >= own):
            return twin
    return None
