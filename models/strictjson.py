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


def loads(raw: str | bytes | bytearray) -> Any:
    """Parse JSON, refusing non-finite numbers, NUL characters and nesting too deep for the parser (ValueError)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if _NUL.search(data):
        raise ValueError("a string holds a NUL character (\\u0000)")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
