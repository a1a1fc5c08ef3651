"""How times and durations read to a driver: in the site's time zone and language, as people write them.

Notices used to show `2026-12-06T00:27:40.010136+00:00` and "1 minutes"; these helpers give
"6 Dec 2026, 00:27:40 CET", "1 minute" and "in less than a minute" (in German "6.12.2026, 00:27:40 CET",
"1 Minute", "in weniger als einer Minute"). Pure functions, no I/O. A language is a code of `LANGUAGES`
(the site setting `site.language`); anything else reads as English.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None) -> ZoneInfo:
    """The site's zone; UTC for a missing or unknown name (the settings validate it already)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


LANGUAGES: dict[str, str] = {"en": "English", "de": "Deutsch"}


def local_time(at: datetime | str | None, tz: ZoneInfo, seconds: bool = True, lang: str = "en") -> str:
    """`at` in the site's zone: "6 Dec 2026, 00:27:40 CET" (seconds where money depends on them);
    German "6.12.2026, 00:27:40 CET"."""
    if at is None or at == "":
        return ""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(tz)
    clock = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    if lang == "de":
        return f"{local.day}.{local.month}.{local.year}, {clock} {local.strftime('%Z')}".rstrip()
    return f"{local.day} {local.strftime('%b %Y')}, {clock} {local.strftime('%Z')}".rstrip()


def minutes_text(n: int, lang: str = "en") -> str:
    """"1 minute", "15 minutes" ("1 Minute", "15 Minuten")."""
    if lang == "de":
        return f"{n} Minute" if n == 1 else f"{n} Minuten"
    return f"{n} minute" if n == 1 else f"{n} minutes"


def time_left(until: datetime, now: datetime, lang: str = "en") -> str:
    """"in 14 minutes" counted down in whole minutes (never more than is left), "in less than a minute",
    or "now" once `until` has passed: the same instant the notice prints as the fee's start."""
    left = (until - now).total_seconds()
    de = lang == "de"
    if left <= 0:
        return "jetzt" if de else "now"
    if left < 60:
        return "in weniger als einer Minute" if de else "in less than a minute"
    return f"in {minutes_text(int(left // 60), lang)}"


# What the driver page calls each visit timeline entry (`enforcement.decide` writes the keys).
EVENT_WORDS: dict[str, str] = {
    "arrived": "car arrived",
    "plate_corrected": "plate read corrected",
    "exempt": "exempt from fees",
    "blacklisted": "vehicle on the block list",
    "linked": "charging session started",
    "charging": "charging",
    "suspended": "charging paused by the station",
    "idle": "charging finished",
    "warning": "driver warned",
    "violation": "fee started",
    "idle_fee_resumed": "idle fee resumed",
    "idle_end": "idle fee stopped",
    "idle_ended": "idle fee stopped",
    "overstay_ended": "overstay fee stopped",
    "unplugged": "cable unplugged",
    "transaction_ended": "charging session ended",
    "left_plugged": "car left with the cable still reported in",
    "departed": "car left",
    "camera_down": "camera out of service",
    "camera_up": "camera back in service",
    "presence_resumed": "car seen again",
    "seen_after_outage": "car seen again",
}
EVENT_WORDS_DE: dict[str, str] = {
    "arrived": "Fahrzeug angekommen",
    "plate_corrected": "Kennzeichen korrigiert",
    "exempt": "von Gebühren befreit",
    "blacklisted": "Fahrzeug auf der Sperrliste",
    "linked": "Ladevorgang begonnen",
    "charging": "lädt",
    "suspended": "Laden von der Ladestation pausiert",
    "idle": "Laden beendet",
    "warning": "Fahrer gewarnt",
    "violation": "Gebühr begonnen",
    "idle_fee_resumed": "Standgebühr läuft wieder",
    "idle_end": "Standgebühr beendet",
    "idle_ended": "Standgebühr beendet",
    "overstay_ended": "Gebühr für Überschreitung der Parkdauer beendet",
    "unplugged": "Kabel abgezogen",
    "transaction_ended": "Ladevorgang beendet",
    "left_plugged": "Fahrzeug weggefahren, Kabel noch als gesteckt gemeldet",
    "departed": "Fahrzeug weggefahren",
    "camera_down": "Kamera außer Betrieb",
    "camera_up": "Kamera wieder in Betrieb",
    "presence_resumed": "Fahrzeug wieder gesehen",
    "seen_after_outage": "Fahrzeug wieder gesehen",
}
# OCPP status and stop-reason words, as a driver would say them.
OCPP_WORDS: dict[str, str] = {
    "SuspendedEVSE": "paused by the charging station",
    "SuspendedEV": "the car stopped taking power",
    "EVDisconnected": "cable unplugged",
    "EVConnected": "cable plugged in",
    "SuspendedByEV": "the car stopped taking power",
    "StoppedByEV": "stopped by the car",
    "EmergencyStop": "emergency stop",
    "DeAuthorized": "charging authorisation withdrawn",
    "PowerLoss": "power cut at the station",
    "Remote": "stopped remotely",
    "Local": "stopped at the charging station",
    "Finishing": "finishing",
    "Charging": "charging",
    "Idle": "charging finished",
}
OCPP_WORDS_DE: dict[str, str] = {
    "SuspendedEVSE": "von der Ladestation pausiert",
    "SuspendedEV": "das Fahrzeug nimmt keinen Strom mehr auf",
    "EVDisconnected": "Kabel abgezogen",
    "EVConnected": "Kabel eingesteckt",
    "SuspendedByEV": "das Fahrzeug nimmt keinen Strom mehr auf",
    "StoppedByEV": "vom Fahrzeug beendet",
    "EmergencyStop": "Not-Aus",
    "DeAuthorized": "Ladefreigabe entzogen",
    "PowerLoss": "Stromausfall an der Ladestation",
    "Remote": "aus der Ferne beendet",
    "Local": "an der Ladestation beendet",
    "Finishing": "wird beendet",
    "Charging": "lädt",
    "Idle": "Laden beendet",
}

# The rule a penalty broke, as its notice names it.
RULE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "idle": "Idle fee: the car stayed connected after charging finished, beyond the grace period",
        "overstay": "Maximum stay exceeded",
        "no_charging": "Parked in an EV charging bay without charging",
        "return_ban": "Returned within the ban period after an overstay",
    },
    "de": {
        "idle": "Standgebühr: das Fahrzeug blieb nach dem Ende des Ladens über die Karenzzeit hinaus angeschlossen",
        "overstay": "Höchstparkdauer überschritten",
        "no_charging": "Auf einem Ladeplatz für Elektrofahrzeuge geparkt, ohne zu laden",
        "return_ban": "Innerhalb der Sperrfrist nach einer Überschreitung zurückgekehrt",
    },
}

# E-mail subjects of the driver notices (str.format with plate, bay, site).
SUBJECTS: dict[str, dict[str, str]] = {
    "en": {"penalty_warning": "Charging finished at bay {bay}: please move your car",
           "penalty_notice": "Penalty notice for {plate} at {site}"},
    "de": {"penalty_warning": "Laden an Stellplatz {bay} beendet: bitte fahren Sie Ihr Fahrzeug weg",
           "penalty_notice": "Gebührenbescheid für {plate} bei {site}"},
}

# The driver page's words.
NOTICE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Parking notice", "vehicle": "Vehicle", "unreadable": "unreadable plate", "bay": "Bay",
        "rule": "Rule", "from": "From", "to": "To", "ongoing": "ongoing", "billed": "Minutes billed",
        "amount": "Amount", "status": "Status", "evidence": "Evidence",
        "evidence_alt": "Camera image of the plate at the bay", "happened": "What happened",
        "dispute": "Dispute this notice", "why": "Why do you think this notice is wrong?",
        "send_dispute": "Send dispute", "disputed": "Thank you: your dispute was recorded; an operator will review it.",
        "push": "Notify me on this device", "who": "Who runs this car park",
        "registration": "Registration number", "email": "E-mail", "phone": "Phone",
        "state_violation": "running", "state_notice_issued": "notice issued",
        "state_pending_review": "pending review", "state_disputed": "disputed", "state_waived": "waived",
        "state_voided": "voided", "state_no_charge": "no charge",
    },
    "de": {
        "title": "Parkhinweis", "vehicle": "Fahrzeug", "unreadable": "Kennzeichen nicht lesbar", "bay": "Stellplatz",
        "rule": "Regel", "from": "Von", "to": "Bis", "ongoing": "läuft noch", "billed": "Berechnete Minuten",
        "amount": "Betrag", "status": "Stand", "evidence": "Beweisfoto",
        "evidence_alt": "Kamerabild des Kennzeichens am Stellplatz", "happened": "Was geschah",
        "dispute": "Diesem Bescheid widersprechen", "why": "Warum ist dieser Bescheid Ihrer Meinung nach falsch?",
        "send_dispute": "Widerspruch senden",
        "disputed": "Danke: Ihr Widerspruch wurde gespeichert; ein Mitarbeiter prüft ihn.",
        "push": "Auf diesem Gerät benachrichtigen", "who": "Betreiber dieses Parkplatzes",
        "registration": "Registernummer", "email": "E-Mail", "phone": "Telefon",
        "state_violation": "läuft", "state_notice_issued": "Bescheid ausgestellt",
        "state_pending_review": "wird geprüft",
        "state_disputed": "Widerspruch eingelegt", "state_waived": "erlassen", "state_voided": "aufgehoben",
        "state_no_charge": "keine Gebühr",
    },
}


def texts(table: dict[str, dict[str, str]], lang: str) -> dict[str, str]:
    """The language's entries of a table, English where it has none."""
    return {**table["en"], **table.get(lang, {})}


def timeline_line(what: str, detail: str = "", lang: str = "en") -> str:
    """One timeline entry in plain words: "charging finished (the car stopped taking power)"; a detail
    that only repeats the entry's name ("departed: departed") is left out."""
    events, ocpp_words = (EVENT_WORDS_DE, OCPP_WORDS_DE) if lang == "de" else (EVENT_WORDS, OCPP_WORDS)
    label = events.get(what) or EVENT_WORDS.get(what, what.replace("_", " "))
    words = detail.strip()
    if lang == "de":
        words = _detail_de(what, words)
        return f"{label} ({words})" if words and words.lower() != label.lower() else label
    for ocpp, plain in sorted(ocpp_words.items(), key=lambda kv: -len(kv[0])):
        words = _replace_word(words, ocpp, plain)
    if not words or words.lower() in (what.replace("_", " ").lower(), label.lower(),
                                      EVENT_WORDS.get(what, "").lower()):
        return label
    return f"{label} ({words})"


def _detail_de(what: str, detail: str) -> str:
    """The part of an entry's detail a German-speaking driver can use, in German. The engine writes its
    details in English for operators (ids, scores, rule names); a German page keeps only what it can say
    in German (the plate, the minutes billed, the charger's reason) and drops the rest, never English."""
    if what == "arrived":
        m = re.match(r"plate (\S+)", detail)
        if m is None:
            return ""
        return "Kennzeichen nicht lesbar" if m.group(1) == "unreadable" else f"Kennzeichen {m.group(1)}"
    billed = re.search(r"(\d+) idle min billed", detail)
    if billed is not None:
        n = int(billed.group(1))
        return f"{n} {'Minute' if n == 1 else 'Minuten'} berechnet"
    # A charger's status or stop reason ("SuspendedEV", "transaction ended: EVDisconnected"): its OCPP word.
    word = detail.rsplit(":", 1)[-1].strip() if detail.startswith("transaction ended:") else detail
    return OCPP_WORDS_DE.get(word, "")


def _replace_word(text: str, word: str, plain: str) -> str:
    return re.sub(rf"\b{re.escape(word)}\b", plain, text)
