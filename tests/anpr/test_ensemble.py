"""Regions never delete evidence; the two-reader ensemble and its calibrated confidence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anpr.ensemble import FEATURES, UNTRUSTED_CAP, Calibrator, EnsembleReader, combine
from anpr.ocr import OcrLoadError, TextRead
from anpr.plates import ALPHABET, CtcScores
from anpr.regions import REGIONS, apply_regions, get_regions
from models.settings import REGION_NAMES


def read_of(text: str, conf: float = 0.95, band: str = "") -> TextRead:
    """A CTC posterior that spells `band` + `text` (one frame per char, blanks between)."""
    glyphs = band + text
    frames = []
    for ch in glyphs:
        p = np.full(37, (1 - conf) / 36)
        p[1 + ALPHABET.index(ch)] = conf
        frames.append(p)
        b = np.full(37, 0.01 / 36)
        b[0] = 0.99
        frames.append(b)
    probs = np.array(frames)
    probs /= probs.sum(1, keepdims=True)
    ctc = CtcScores.from_probs(probs, 0, list(range(1, 37)))
    return TextRead(glyphs, conf ** len(glyphs), (conf,) * len(glyphs), ctc)


def test_region_names_match_settings():
    assert set(REGIONS) == set(REGION_NAMES)


@pytest.mark.parametrize("region", list(REGIONS))
@pytest.mark.parametrize("text", ["6HP995", "CCLVN3", "R820503", "1AMW240", "AB12CDE", "ZZ", "7ABCD1234"])
def test_regions_never_change_the_length(region, text):
    verdict = apply_regions(text, get_regions(region))
    assert len(verdict.text) == len(text)


def test_generic_changes_nothing_and_us_refuses_decorations():
    for text in ("6HP995", "CALIFORNIA", "AB"):
        assert apply_regions(text, get_regions("generic")).text == text
    us = get_regions("us")
    assert not apply_regions("CALIFORNIA", us).accepted
    assert not apply_regions("SUNSHINESTATE", us).accepted
    assert apply_regions("6HP995", us).accepted and apply_regions("R820503", us).accepted
    assert not apply_regions("A", us).accepted and not apply_regions("ABCDEFGHI", us).accepted


def test_eu_region_swaps_lookalikes_toward_a_format_only():
    eu = get_regions("eu")
    assert apply_regions("S1819AK", eu).text == "SI819AK"  # LLDDDLL: a letter is wanted second
    assert apply_regions("RK099AN", eu).text == "RK099AN"
    with pytest.raises(ValueError, match="unknown region"):
        get_regions("mars")


def test_product_of_experts_drops_a_band_letter_only_one_reader_sees():
    # The trained reader reads the EU band's country letter as a character; the other reader does not.
    primary = read_of("RK099AN", band="P")
    second = read_of("RK099AN")
    ev = combine(primary, second, get_regions("generic"))
    assert ev is not None and ev.text == "RK099AN"
    assert ev.features["agree"] == 0.0 and ev.trusted


def test_agreeing_readers_give_their_text_with_a_wide_margin():
    ev = combine(read_of("6HP995"), read_of("6HP995"), get_regions("us"))
    assert ev.text == "6HP995" and ev.features["agree"] == 1.0 and ev.features["margin"] == 30.0


def _blank_read(frames: int = 12) -> TextRead:
    """A posterior of blanks only: the reader looked and saw no text (a headlight, a rear window)."""
    probs = np.full((frames, 37), 0.01 / 36)
    probs[:, 0] = 0.99
    return TextRead("", 0.0, (), CtcScores.from_probs(probs, 0, list(range(1, 37))))


def test_a_read_the_other_reader_does_not_see_has_no_margin():
    # A headlight in a 1600x900 scene: the trained reader made AAE86 of it, RapidOCR saw no text. That is no
    # confirmation: the committed calibration put it at 0.90 while the margin claimed the widest lead.
    for second in (_blank_read(), TextRead("", 0.0)):
        ev = combine(read_of("AAE86", conf=0.3), second, get_regions("generic"))
        assert ev is not None and ev.text == "AAE86" and ev.features["margin"] == 0.0
    cal = Calibrator.load()
    alone = EnsembleReader(_Fixed(read_of("AAE86", conf=0.3)), _Fixed(_blank_read()), get_regions("generic"), cal)
    assert alone.read_crop(np.zeros((20, 80, 3), np.uint8)).confidence < 0.5
    # A second reader that returns nothing at all counts the same as one that read no text.
    silent = EnsembleReader(_Fixed(read_of("AAE86", conf=0.3)), _Nothing(), get_regions("generic"), cal)
    assert silent.evidence(np.zeros((20, 80, 3), np.uint8)).features["margin"] == 0.0
    # Without a second reader nothing changes: no other reading competes.
    ev = combine(read_of("6HP995"), None, get_regions("us"))
    assert ev is not None and ev.features["margin"] == 30.0


def test_a_read_no_region_accepts_is_never_trusted():
    ev = combine(read_of("TEXAS"), read_of("TEXAS"), get_regions("us"))
    assert ev is not None and not ev.trusted and ev.format_name is None


def test_nothing_read_is_no_read():
    assert combine(None, None, get_regions("generic")) is None
    empty = TextRead("", 0.0, (), None)
    assert combine(empty, empty, get_regions("generic")) is None


def test_calibrator_fits_saves_and_loads(tmp_path):
    rng = np.random.default_rng(1)
    rows, exact = [], []
    for _ in range(400):
        good = rng.random() < 0.7
        rows.append({"ll_primary": rng.normal(-0.5 if good else -4, 1), "ll_second": rng.normal(-1 if good else -6, 2),
                     "margin": 30.0 if good else rng.uniform(0, 5), "agree": float(good and rng.random() < 0.9)})
        exact.append(good)
    cal = Calibrator.fit(rows, exact)
    probs = np.array([cal(r) for r in rows])
    assert probs[np.array(exact)].mean() > 0.8 > 0.3 > probs[~np.array(exact)].mean()
    path = tmp_path / "cal.json"
    cal.save(path, note="test")
    again = Calibrator.load(path)
    assert json.loads(path.read_text())["features"] == list(FEATURES)
    assert abs(again(rows[0]) - cal(rows[0])) < 1e-4


def test_missing_or_corrupt_calibration_names_the_file(tmp_path):
    with pytest.raises(OcrLoadError, match=r"nothere\.json"):
        Calibrator.load(tmp_path / "nothere.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OcrLoadError, match=r"bad\.json"):
        Calibrator.load(bad)


class _Fixed:
    name = "fixed"

    def __init__(self, read: TextRead) -> None:
        self._read = read

    def read(self, crop):
        return [self._read]


class _Nothing:
    name = "nothing"

    def read(self, crop):
        return []


def test_uncalibrated_or_untrusted_reads_stay_below_review():
    crop = np.zeros((20, 80, 3), np.uint8)
    reader = EnsembleReader(_Fixed(read_of("AB123CD")), _Fixed(read_of("AB123CD")), get_regions("generic"), None)
    assert reader.read_crop(crop).confidence <= UNTRUSTED_CAP
    sure = Calibrator([1.0, 1.0, 1.0, 5.0], 10.0)
    reader = EnsembleReader(_Fixed(read_of("TEXAS")), _Fixed(read_of("TEXAS")), get_regions("us"), sure)
    assert reader.read_crop(crop).confidence <= UNTRUSTED_CAP
    reader = EnsembleReader(_Fixed(read_of("6HP995")), _Fixed(read_of("6HP995")), get_regions("us"), sure)
    assert reader.read_crop(crop).confidence > 0.99


def test_a_short_read_never_skips_review():
    # Badges and stickers read as two or three characters (a car maker's SK, a model's M5): however
    # sure the readers are, such a read goes to an operator.
    sure = Calibrator([1.0, 1.0, 1.0, 5.0], 10.0)
    crop = np.zeros((20, 80, 3), np.uint8)
    for text, cap in (("SK", True), ("M5X", True), ("M5XS", False)):
        reader = EnsembleReader(_Fixed(read_of(text)), _Fixed(read_of(text)), get_regions("us"), sure)
        read = reader.read_crop(crop)
        assert read.text == text and (read.confidence <= UNTRUSTED_CAP) == cap, text


def test_a_read_with_an_equally_plausible_lookalike_twin_is_never_sure():
    from anpr.regions import lookalike_twin

    assert lookalike_twin("BA2681M") == "BA268IM"  # a Polish shape one glyph from a Slovak one
    assert lookalike_twin("BA3020Z") == "BA302OZ"
    for text in ("BA268IM", "ABC1234", "6MBV006", "M5XSX", "RK099AN"):  # no twin as plausible by shape
        assert lookalike_twin(text) is None, text
    sure = Calibrator([1.0, 1.0, 1.0, 5.0], 10.0)
    crop = np.zeros((20, 80, 3), np.uint8)
    reader = EnsembleReader(_Fixed(read_of("BA2681M")), _Fixed(read_of("BA2681M")), get_regions("generic"), sure)
    read = reader.read_crop(crop)
    assert read.confidence <= UNTRUSTED_CAP
    # The twin is a doubt about one glyph, not about there being a plate: how sure the read is to be a
    # plate's text (what tells plates from other text in a frame) keeps the calibrated probability.
    assert read.plate_confidence is not None and read.plate_confidence > 0.99
    for text in ("SK", "TEXAS"):  # a badge or a state's name is no plate either way
        reader = EnsembleReader(_Fixed(read_of(text)), _Fixed(read_of(text)), get_regions("us"), sure)
        read = reader.read_crop(crop)
        assert read.confidence <= UNTRUSTED_CAP and read.plate_confidence <= UNTRUSTED_CAP


def test_a_badge_word_is_read_but_never_trusted():
    # A car maker's name off a tailgate, read by both readers: the text stays (regions never change what
    # is read), but it neither skips review nor counts as a plate.
    from anpr.regions import is_badge

    assert is_badge("CITROEN") and is_badge("mercedes-benz") and is_badge("4MATIC")
    assert not is_badge("6HP995") and not is_badge("RK099AN")
    sure = Calibrator([1.0, 1.0, 1.0, 5.0], 10.0)
    crop = np.zeros((20, 80, 3), np.uint8)
    for region in ("generic", "eu", "us"):
        reader = EnsembleReader(_Fixed(read_of("CITROEN")), _Fixed(read_of("CITROEN")), get_regions(region), sure)
        read = reader.read_crop(crop)
        assert read.text == "CITROEN" and read.confidence <= UNTRUSTED_CAP, region
        assert read.plate_confidence is not None and read.plate_confidence <= UNTRUSTED_CAP, region
    assert apply_regions("CITROEN", get_regions("generic")).accepted  # generic still accepts it as read


def test_a_reader_that_merges_doubled_characters_never_shortens_the_read():
    # RapidOCR's coarse frames read LLL333 as LL33; the trained reader sees every glyph. The shorter
    # text must not win by the second reader's vote (it cannot tell repeats apart), whatever the region.
    for region in ("generic", "us"):
        ev = combine(read_of("LLL333"), read_of("LL33"), get_regions(region))
        assert ev is not None and ev.text == "LLL333"
        ev = combine(read_of("222NNN", conf=0.9), read_of("222NN", conf=0.99), get_regions(region))
        assert ev is not None and ev.text == "222NNN"
    # The other way round the primary still decides: a stutter the second reader does not share loses
    # when the primary's own posterior prefers the single glyph.
    ev = combine(read_of("RK855AP"), read_of("RK8855AP"), get_regions("generic"))
    assert ev is not None and ev.text == "RK855AP"


def test_drops_repeats_is_only_about_run_lengths():
    from anpr.ensemble import drops_repeats

    assert drops_repeats("LL33", "LLL333") and drops_repeats("222NN", "222NNN")
    assert not drops_repeats("LLL333", "LL33")
    assert not drops_repeats("LM33", "LLL333") and not drops_repeats("AB", "ABC")
    assert not drops_repeats("L3L3", "LL33")


def test_the_recogniser_decides_o_against_0_not_the_word_reader():
    # A val-crop US scene: the trained recogniser read C2TURB0 (the label), RapidOCR, surer of itself,
    # C2TURBO (a word). Between texts that differ only in O/0 the recogniser's posterior decides,
    # in either direction; other look-alike pairs are still judged by both readers.
    for region in ("generic", "us"):
        ev = combine(read_of("C2TURB0", conf=0.9), read_of("C2TURBO", conf=0.99), get_regions(region))
        assert ev is not None and ev.text == "C2TURB0"
        ev = combine(read_of("355OCT", conf=0.9), read_of("3550CT", conf=0.99), get_regions(region))
        assert ev is not None and ev.text == "355OCT"
    ev = combine(read_of("IT10294", conf=0.9), read_of("1T10294", conf=0.99), get_regions("generic"))
    assert ev is not None and ev.text == "1T10294"


def test_differ_in_round_glyphs_only():
    from anpr.ensemble import differ_in_round_glyphs_only

    assert differ_in_round_glyphs_only("C2TURB0", "C2TURBO") and differ_in_round_glyphs_only("0O", "O0")
    assert not differ_in_round_glyphs_only("ABC", "ABC") and not differ_in_round_glyphs_only("C2TURB0", "C2TURB")
    assert not differ_in_round_glyphs_only("1T10294", "IT10294") and not differ_in_round_glyphs_only("0Q", "OO")
