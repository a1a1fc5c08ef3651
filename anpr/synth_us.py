"""Synthetic US-style plates for recogniser training (`train-recognizer --synthetic-us N`).

The real US training crops are 636 plates from one source; the private photos carry other designs.
These plates are drawn here (no downloaded artwork): a 2:1 plate with a state name above the
registration and a slogan below, the registration in one of the serial patterns US states issue (or a
vanity word), and what the reader must learn to leave out: registration stickers in the corners, an
emblem in the gap between the character groups, a dealer frame with its own text, a picture behind
the characters. Serial letters skip I, O and Q as most states' series do, so a round glyph among
serial characters is a digit, as in the real labels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import cv2
import numpy as np

_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # serial letters: no I, O, Q
_VANITY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
# (pattern, where a gap goes): L letter, D digit; the gap splits the groups as plates print them
_PATTERNS = [
    ("DLLLDDD", 4), ("LLLDDDD", 3), ("LLLDDD", 3), ("DDDLLL", 3), ("LLDDDDD", 2), ("DLLDDDD", 3),
    ("DDDDLL", 4), ("LLLLDDD", 4), ("DDLLLD", 2), ("LDDDLL", 4), ("DDDDDD", 3), ("LLDDLL", 2),
    ("DLDDDD", 2), ("DDDLLLL", 3),
]
_STATES = [
    "ALABAMA", "ALASKA", "ARIZONA", "ARKANSAS", "CALIFORNIA", "COLORADO", "CONNECTICUT", "DELAWARE",
    "FLORIDA", "GEORGIA", "HAWAII", "IDAHO", "ILLINOIS", "INDIANA", "IOWA", "KANSAS", "KENTUCKY",
    "LOUISIANA", "MAINE", "MARYLAND", "MASSACHUSETTS", "MICHIGAN", "MINNESOTA", "MISSISSIPPI", "MISSOURI",
    "MONTANA", "NEBRASKA", "NEVADA", "NEW HAMPSHIRE", "NEW JERSEY", "NEW MEXICO", "NEW YORK",
    "NORTH CAROLINA", "NORTH DAKOTA", "OHIO", "OKLAHOMA", "OREGON", "PENNSYLVANIA", "RHODE ISLAND",
    "SOUTH CAROLINA", "SOUTH DAKOTA", "TENNESSEE", "TEXAS", "UTAH", "VERMONT", "VIRGINIA", "WASHINGTON",
    "WEST VIRGINIA", "WISCONSIN", "WYOMING",
]
_SLOGAN_WORDS = [
    "THE", "STATE", "GREAT", "LAND", "OF", "LAKES", "SUNSHINE", "GRAND", "CANYON", "FIRST", "LIVE", "FREE",
    "OR", "DIE", "HEART", "DIXIE", "NATURAL", "WONDER", "SHOW", "ME", "EMPIRE", "GARDEN", "OCEAN",
    "MOUNTAIN", "TREASURE", "FAMOUS", "POTATOES", "EXPLORE", "PEACH", "LONE", "STAR", "BEEHIVE",
]


def _pick(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def registration(rng: random.Random) -> tuple[list[str], str]:
    """(groups as printed, label): a serial pattern split at its gap, or a vanity word."""
    if rng.random() < 0.12:
        n = rng.randint(3, 7)
        word = "".join(rng.choice(_VANITY + _DIGITS if rng.random() < 0.2 else _VANITY) for _ in range(n))
        return [word], word
    pattern, gap = rng.choice(_PATTERNS)
    text = "".join(rng.choice(_LETTERS if p == "L" else _DIGITS) for p in pattern)
    groups = [text[:gap], text[gap:]] if rng.random() < 0.75 else [text]
    return groups, text


def _colour(rng: random.Random, light: bool) -> tuple[int, int, int]:
    lo, hi = (170, 255) if light else (0, 120)
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def render_us_plate(rng: random.Random, fonts: Sequence[str]):
    """One synthetic US plate: (BGR image with a surround, label, plate box)."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = 480, 240
    light_bg = rng.random() < 0.85
    bg = _colour(rng, light_bg)
    fg = _colour(rng, not light_bg)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # a picture behind the characters: soft colour bands and blobs
        for _ in range(rng.randint(1, 4)):
            c = _colour(rng, light_bg)
            y = rng.randint(0, h)
            x0, top, x1 = rng.randint(-200, w // 2), y - rng.randint(20, 90), rng.randint(w // 2, w + 200)
            draw.ellipse([x0, top, x1, y + 90], fill=c)
    main_font = ImageFont.truetype(rng.choice(fonts), rng.randint(104, 128))
    small_font = ImageFont.truetype(rng.choice(fonts), rng.randint(28, 40))
    tiny_font = ImageFont.truetype(fonts[0], rng.randint(16, 22))
    # state name above, slogan below, in the state's own colour
    accent = _colour(rng, False) if light_bg else _colour(rng, True)
    state = rng.choice(_STATES)
    if rng.random() < 0.5:
        state = state.title()
    draw.text((w // 2 + rng.randint(-20, 20), 26), state, font=small_font, fill=accent, anchor="mm")
    if rng.random() < 0.8:
        slogan = " ".join(rng.choice(_SLOGAN_WORDS) for _ in range(rng.randint(2, 4)))
        draw.text((w // 2, h - 24), slogan.title() if rng.random() < 0.5 else slogan, font=tiny_font, fill=accent,
                  anchor="mm")
    # the registration, with a gap (space, dash or emblem) between its groups
    groups, label = registration(rng)
    gap_w = rng.randint(18, 44) if len(groups) > 1 else 0
    widths = [main_font.getlength(g) for g in groups]
    total = sum(widths) + gap_w
    scale_x = min(1.0, (w - 50) / max(1.0, total))
    layer = Image.new("RGBA", (int(total) + 4, 150), (0, 0, 0, 0))
    ld = ImageDraw.Draw(layer)
    x = 0.0
    for k, (g, gw) in enumerate(zip(groups, widths, strict=True)):
        ld.text((x, 75), g, font=main_font, fill=(*fg, 255), anchor="lm")
        x += gw
        if k == 0 and len(groups) > 1:
            style = rng.random()
            if style < 0.3:
                ld.line([(x + gap_w * 0.25, 75), (x + gap_w * 0.75, 75)], fill=(*fg, 255), width=8)
            elif style < 0.6:  # an emblem in the gap (heart, star, state outline: a filled shape)
                r = gap_w * 0.45
                ld.ellipse([x + gap_w / 2 - r, 75 - r, x + gap_w / 2 + r, 75 + r], fill=(*accent, 255))
            x += gap_w
    layer = layer.resize((max(1, int(layer.width * scale_x)), layer.height))
    img.paste(layer, ((w - layer.width) // 2, h // 2 - 75 + rng.randint(-8, 8)), layer)
    # registration stickers in the top corners, month/year, never part of the plate's text
    for corner in rng.sample(["left", "right"], rng.choice([0, 1, 1, 2])):
        sw, sh = rng.randint(44, 70), rng.randint(30, 48)
        sx = rng.randint(8, 24) if corner == "left" else w - sw - rng.randint(8, 24)
        sy = rng.randint(6, 20)
        draw.rectangle([sx, sy, sx + sw, sy + sh], fill=_colour(rng, rng.random() < 0.5))
        draw.text((sx + sw // 2, sy + sh // 2), rng.choice(["1", "2", "3", "6", "9", "11", "25", "26", "JUN", "APR"]),
                  font=small_font, fill=(20, 20, 20), anchor="mm")
    draw.rectangle([1, 1, w - 2, h - 2], outline=fg, width=rng.randint(2, 6))
    arr = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)
    pad = 48
    surround = np.full((h + 2 * pad, w + 2 * pad, 3), rng.randint(20, 200), np.uint8)
    if rng.random() < 0.35:  # a dealer frame: dark border, thicker below, with its own text
        frame_c = rng.randint(10, 60)
        surround[pad - 14 : pad + h + 34, pad - 14 : pad + w + 14] = frame_c
        cv2.putText(surround, rng.choice(["AUTO SALES", "MOTORS", "DEALER", "FORD", "HONDA"]),
                    (pad + w // 4, pad + h + 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (200, 200, 200), 2)
    surround[pad : pad + h, pad : pad + w] = arr
    return surround, label, (pad, pad, pad + w, pad + h)
