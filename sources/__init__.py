"""Plate reads from systems a site already has (ANPR cameras, Plate Recognizer, scripts): each format's
parser turns a request into `OutsideRead`s (`formats.py`), and `presence.py` derives arrivals, still-
present heartbeats and departures from reads that come once per car. Pure: no I/O, no database."""
