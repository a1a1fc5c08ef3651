"""JSON from strangers: what a database and every JSON peer can store back.

`json.loads` accepts `NaN`, `Infinity` and `-Infinity` and the escape `\u0000` (PostgreSQL refuses
all of them, so a stored event would fail later, far from the request) and raises RecursionError,
not ValueError, on deeply nested input. `loads` turns all of these into ValueError, so callers
handle one exception.
"""

from __future__ import annotations

import json
import re
from typing import Any

# \u0000 not preceded by an escaped backslash (an odd number of backslashes before the "u").
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999 overflows to infinity
        raise ValueError(f"{text[:20]} is out of range")
    return value


# One decoder for every call: json.loads with hooks builds a new decoder and scanner each time (most of
# the cost of a small message, and the MQTT intake parses thousands a second).
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def loads(raw: str | bytes | bytearray) -> Any:
    """Parse JSON, refusing non-finite numbers, NUL characters and nesting too deep for the parser (ValueError)."""
    if isinstance(raw, str):
        text, data = raw, raw.encode("utf-8", "surrogatepass")
    else:
        data = bytes(raw)
        text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does with bytes
    if "\\" in text and _NUL.search(data):
        raise ValueError("a string holds a NUL character (\\u0000)")
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
