"""Plate text rules: normalisation, formats, look-alike repair, CTC format decoding."""

from __future__ import annotations

import numpy as np
import pytest

from anpr.plates import (
    ALPHABET,
    KNOWN_FORMATS,
    CtcScores,
    PlateFormat,
    choose_best,
    decode_ctc,
    get_formats,
    match_format,
    normalize,
    score_texts,
)

EU = get_formats("eu")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("M5-XSX", "M5XSX"),
        ("ab 12 cd", "AB12CD"),
        ("\uff2d\uff15 \uff38\uff33\uff38", "M5XSX"),  # full-width forms from CJK recognisers
        ("RK·755-AJ\n", "RK755AJ"),
        ("", ""),
        (None, ""),
        ("-- .", ""),
    ],
)
def test_normalize(raw: str | None, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("pattern", "lengths", "good", "bad"),
    [
        ("LLDDLLL", [7], ["OY09FEU"], ["OY0FEU9", "OY09FE"]),
        ("L{1,2} D{1,3}", [2, 3, 4, 5], ["A1", "AB123"], ["123", "ABC1"]),
        ("D L A DDDD", [7], ["1B80338", "4BO4979"], ["1880338"]),
        ("LL DDDDD | LL DDDLL", [7], ["WA56660", "WA123AB"], ["WA12A3B"]),
        ("L{1,3} L{1,2} D{1,4} [EH]{0,1}", [3, 4, 5, 6, 7, 8, 9, 10], ["BAB1234E", "MX1"], ["B1234X"]),
    ],
)
def test_pattern_expansion(pattern: str, lengths: list[int], good: list[str], bad: list[str]) -> None:
    fmt = PlateFormat("t", pattern)
    assert sorted({len(t) for t in fmt.templates}) == lengths
    for text in good:
        assert fmt.matches(text), text
    for text in bad:
        assert not fmt.matches(text), text


@pytest.mark.parametrize("pattern", ["", "LLX", "L{3,1}", "L{2"])
def test_bad_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(ValueError):
        _ = PlateFormat("bad", pattern).templates


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("FR/IT/SK", "RK857A1", "RK857AI"),  # 1 -> I only in a letter slot
        ("FR/IT/SK", "RKS7BAI", "RK578AI"),  # S -> 5, B -> 8 in digit slots
        ("FR/IT/SK", "8A3020Z", "BA302OZ"),  # both directions in one plate
        ("FR/IT/SK", "NO626AT", "NO626AT"),  # already fits: unchanged
        ("UK", "0Y09FEU", "OY09FEU"),
        ("UK", "OYO9FEU", "OY09FEU"),
        ("CZ", "1BO4979", "1BO4979"),  # the third CZ slot takes either class: no swap there
        ("FR/IT/SK", "RK8X7AI", None),  # X has no digit look-alike
        ("FR/IT/SK", "RK857A", None),  # wrong length
    ],
)
def test_lookalike_fix_only_where_format_demands(fmt: str, text: str, expected: str | None) -> None:
    fixed = KNOWN_FORMATS[fmt].fix(text)
    assert (fixed[0] if fixed else None) == expected


def test_formats_prefer_strict_shapes_over_generic() -> None:
    assert match_format("RK755AJ", EU).name == "FR/IT/SK"
    assert match_format("GWAGEN", EU).name == "generic"
    assert match_format("A1", EU) is None


def test_get_formats() -> None:
    assert [f.name for f in get_formats("uk")] == ["UK", "generic"]
    assert [f.name for f in get_formats("BR, generic")] == ["BR", "generic"]
    custom = PlateFormat("XX", "LLL DDD")
    assert get_formats([custom, "UK"]) == (custom, KNOWN_FORMATS["UK"])
    with pytest.raises(KeyError):
        get_formats("Atlantis")


@pytest.mark.parametrize(
    ("reads", "expected", "fmt"),
    [
        ([("RK857A1", 0.9), ("RK857AI", 0.5)], "RK857AI", "FR/IT/SK"),
        ([("RK-755-AJ", 0.8)], "RK755AJ", "FR/IT/SK"),
        ([("GWAGEN", 0.7), ("GWA6EN", 0.2)], "GWAGEN", "generic"),
        ([("OY09 FEU", 0.6), ("0Y09FEU", 0.6), ("XX", 0.99)], "OY09FEU", "UK"),
    ],
)
def test_choose_best(reads: list[tuple[str, float]], expected: str, fmt: str) -> None:
    best = choose_best(reads, EU)
    assert best is not None
    assert (best.text, best.format_name) == (expected, fmt)


def test_choose_best_nothing_readable() -> None:
    assert choose_best([("-", 0.9), ("", 0.5)], EU) is None


# --- CTC decoding, on posteriors built by hand (a real model's posterior is tested in test_recognizer)


def posterior(frames: list[str], sure: float = 0.9) -> CtcScores:
    """One frame per item: '-' blank, '?' a non-plate symbol, else that character (mostly)."""
    vocab = ["<blank>", *ALPHABET, "?"]
    probs = np.full((len(frames), len(vocab)), (1 - sure) / (len(vocab) - 1))
    for t, sym in enumerate(frames):
        probs[t, 0 if sym == "-" else vocab.index(sym)] = sure
    probs /= probs.sum(1, keepdims=True)
    return CtcScores.from_probs(probs, 0, list(range(1, 37)))


def spell(text: str) -> list[str]:
    out = ["-"]
    for ch in text:
        out += [ch, "-"]
    return out


@pytest.mark.parametrize(
    ("seen", "expected", "fmt"),
    [
        ("RK857AI", "RK857AI", "FR/IT/SK"),
        ("RK857A1", "RK857AI", "FR/IT/SK"),  # look-alike in a letter slot
        ("HRK708AI", "RK708AI", "FR/IT/SK"),  # country band read as a leading letter: skipped
        ("BB135BO", "BB135BO", "FR/IT/SK"),  # double letters survive CTC collapsing
        ("OY09FEU", "OY09FEU", "UK"),
        ("GWAGEN", "GWAGEN", "generic"),
    ],
)
def test_decode_ctc(seen: str, expected: str, fmt: str) -> None:
    best = decode_ctc(posterior(spell(seen)), EU)[0]
    assert (best.text, best.format_name) == (expected, fmt)
    assert len(best.char_confidences) == len(expected)
    assert 0.0 < best.confidence <= 1.0


def test_decode_ctc_without_blank_between_repeats_collapses() -> None:
    # "BB" in consecutive frames without a blank is one B for a CTC model
    frames = ["-", "B", "B", "-", "1", "-", "3", "-", "5", "-", "A", "-", "X", "-", "Y", "-"]
    best = decode_ctc(posterior(frames), get_formats("FR/IT/SK,generic"))[0]
    assert best.text != "BB135AX"


def test_score_texts_matches_decode() -> None:
    scores = posterior(spell("RK857A1"))
    best = decode_ctc(scores, EU)[0]
    fmt = KNOWN_FORMATS[best.format_name]
    forced, other = score_texts(scores, [(best.text, fmt), ("RK857AL", fmt)])
    prior = fmt.log_priors[0]
    assert forced is not None and other is not None
    assert forced.text == best.text
    assert forced.score + prior == pytest.approx(best.score, abs=1e-6)
    assert other.score < forced.score
    assert score_texts(scores, [("TOO-LONG-TEXT", fmt)]) == [None]
