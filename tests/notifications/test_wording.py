"""Times and durations on driver notices: the site's zone, written as people write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from enforcement.channels import Renderer
from enforcement.wording import local_time, minutes_text, time_left, timeline_line, zone


def test_times_are_local_to_the_second_without_offsets_or_microseconds() -> None:
    at = datetime(2026, 12, 6, 0, 27, 40, 10136, tzinfo=UTC)
    assert local_time(at, zone("Europe/Berlin")) == "6 Dec 2026, 01:27:40 CET"
    assert local_time(at.isoformat(), zone("America/New_York"), seconds=False) == "5 Dec 2026, 19:27 EST"
    assert local_time(datetime(2026, 7, 1, 12, 0, tzinfo=UTC), zone("Europe/Berlin")) == "1 Jul 2026, 14:00:00 CEST"
    assert local_time(None, zone("UTC")) == "" and zone("Not/AZone") == zone("UTC")


def test_plurals_and_a_countdown_that_never_promises_more_time_than_is_left() -> None:
    assert minutes_text(1) == "1 minute" and minutes_text(0) == "0 minutes" and minutes_text(15) == "15 minutes"
    end = datetime(2026, 12, 6, 0, 27, 40, tzinfo=UTC)
    assert time_left(end, end - timedelta(minutes=14, seconds=59)) == "in 14 minutes"
    assert time_left(end, end - timedelta(seconds=61)) == "in 1 minute"
    assert time_left(end, end - timedelta(seconds=20)) == "in less than a minute"
    assert time_left(end, end + timedelta(seconds=1)) == "now"


def test_notices_say_one_minute_and_the_grace_end_the_way_it_was_computed() -> None:
    r = Renderer()
    base = {"plate": "AB123CD", "bay": "B1", "site": "Depot", "currency": "EUR"}
    text = r.text("penalty_notice", {**base, "amount": "0.50", "rule": "idle fee", "minutes_billed": 1,
                                     "started_at": "6 Dec 2026, 01:27:40 CET", "ended_at": "6 Dec 2026, 01:28:45 CET",
                                     "driver_url": "https://x.example/n"})
    assert "Billed: 1 minute\n" in text and "To:     6 Dec 2026, 01:28:45 CET" in text
    warn = r.text("penalty_warning", {**base, "grace_ends_at": "6 Dec 2026, 01:27:40 CET", "minutes_left": 0,
                                      "time_left": "in less than a minute", "fee_per_minute": "0.50", "fee_cap": ""})
    assert "It ends at 6 Dec 2026, 01:27:40 CET (in less than a minute)." in warn


def test_timeline_entries_in_plain_words() -> None:
    assert timeline_line("departed", "departed") == "car left"  # not "departed: departed"
    assert timeline_line("idle", "SuspendedEV") == "charging finished (the car stopped taking power)"
    assert timeline_line("transaction_ended", "EVDisconnected") == "charging session ended (cable unplugged)"
    paused = timeline_line("suspended", "SuspendedEVSE: paused by the station, not the car; no idle fee")
    assert paused.startswith("charging paused by the station (") and "SuspendedEVSE" not in paused
    assert timeline_line("something_new", "") == "something new"


def test_german_words_and_times() -> None:
    berlin = zone("Europe/Berlin")
    at = datetime(2026, 12, 5, 23, 27, 40, tzinfo=UTC)
    assert local_time(at, berlin, lang="de") == "6.12.2026, 00:27:40 CET"
    assert minutes_text(1, "de") == "1 Minute" and minutes_text(2, "de") == "2 Minuten"
    assert time_left(at, at - timedelta(minutes=14, seconds=30), "de") == "in 14 Minuten"
    assert time_left(at, at - timedelta(seconds=20), "de") == "in weniger als einer Minute"
    assert time_left(at, at, "de") == "jetzt"
    assert timeline_line("idle", "SuspendedEV", "de") == "Laden beendet (das Fahrzeug nimmt keinen Strom mehr auf)"
    assert timeline_line("departed", "departed", "de") == "Fahrzeug weggefahren"
    assert timeline_line("something_new", "", "de") == "something new"  # unknown keys still read
    # The engine's English details (for operators) never reach a German page: what a driver can use is
    # said in German, the rest is left out.
    assert timeline_line("arrived", "plate EV123AB (0.95) from arrival", "de") == \
        "Fahrzeug angekommen (Kennzeichen EV123AB)"
    assert timeline_line("arrived", "plate unreadable (0.00) from camera", "de") == \
        "Fahrzeug angekommen (Kennzeichen nicht lesbar)"
    assert timeline_line("idle_end", "unplugged; 10 idle min billed so far", "de") == \
        "Standgebühr beendet (10 Minuten berechnet)"
    assert timeline_line("idle_end", "unplugged; 1 idle min billed so far", "de").endswith("(1 Minute berechnet)")
    assert timeline_line("unplugged", "transaction ended: EVDisconnected", "de") == "Kabel abgezogen"
    assert timeline_line("transaction_ended", "EVDisconnected", "de") == "Ladevorgang beendet (Kabel abgezogen)"
    assert timeline_line("linked", "transaction CP1/T42 started 09:10:00", "de") == "Ladevorgang begonnen"
    assert timeline_line("violation", "idle", "de") == "Gebühr begonnen"
    assert timeline_line("departed", "departure", "de") == "Fahrzeug weggefahren"
