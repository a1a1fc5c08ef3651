"""Keyset pages for the JSON list endpoints (visits, lists, penalties, access log, vehicles, transactions).

A list endpoint answers a plain JSON array (as before paging existed) and says where the next page is in
headers: `X-Next-Cursor: <cursor>` and `Link: <same query with cursor=...>; rel="next"`, both absent on the
last page. A cursor is a keyset position (the sort key of the last row shown), so rows stored meanwhile
never shift, repeat or skip rows on later pages. Cursors are opaque to clients; a malformed one is a 422.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator
from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

CURSOR_HELP = "`X-Next-Cursor` of the previous page"
DB_INT_MAX = 2**63 - 1  # a larger id or offset is no row: refuse it (422), do not let the driver overflow (500)
RowId = Annotated[int | None, Query(ge=0, le=DB_INT_MAX, description="A row id (keyset pagination).")]
AfterId = Annotated[int, Query(ge=0, le=DB_INT_MAX, description="Only rows after this id.")]
Offset = Annotated[int, Query(ge=0, le=DB_INT_MAX, description="Rows to skip.")]
RowIdPath = Annotated[int, Path(ge=0, le=DB_INT_MAX, description="A row id.")]


def sane_time(value: datetime | None) -> datetime | None:
    """A filter time the database can hold after time-zone conversion (year 9999 + 1 h overflows)."""
    if value is not None and not (1970 <= value.year <= 2200):
        raise ValueError("time out of range: use a year between 1970 and 2200")
    return value


SaneTime = AfterValidator(sane_time)
CURSOR_MAX = 400  # characters: the longest key (a 200-character violation id and a time) encodes to about 320
BAD_CURSOR = "not a cursor from this API: pass the X-Next-Cursor value (or follow the Link URL) unchanged"


def bad_cursor() -> HTTPException:
    """The 422 for a cursor this API did not hand out, shaped like FastAPI's own validation errors."""
    return HTTPException(422, [{"loc": ["query", "cursor"], "msg": BAD_CURSOR, "type": "value_error"}])


def encode_cursor(*parts: Any) -> str:
    """An opaque cursor from a row's sort key (datetimes as ISO 8601)."""
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, n: int) -> list[Any]:
    """The `n` parts of a cursor made by `encode_cursor`; 422 for anything else."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if not isinstance(parts, list) or len(parts) != n:
        raise bad_cursor()
    return parts


def cursor_time(value: Any) -> datetime:
    """A datetime part of a decoded cursor (aware UTC); 422 when it is not one."""
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None:
        raise bad_cursor()
    return as_utc(at)


def cursor_str(value: Any) -> str:
    """A text part of a decoded cursor; 422 when it is not text."""
    if not isinstance(value, str):
        raise bad_cursor()
    return value


def cursor_int(value: Any) -> int:
    """An integer part of a decoded cursor; 422 when it is not an integer."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_cursor()
    return value


def as_utc(value: datetime) -> datetime:
    """Query-string times without a zone are UTC (the database refuses naive datetimes)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def after_key(columns: Sequence[Any], values: Sequence[Any], descending: bool = True) -> ColumnElement[bool]:
    """Rows strictly after the key `values` in the order of `columns` (all descending or all ascending):
    (c1 < v1) or (c1 = v1 and c2 < v2) or ... written out, so it works on every database."""
    terms = []
    for i, (col, val) in enumerate(zip(columns, values, strict=True)):
        beyond = col < val if descending else col > val
        terms.append(and_(*(c == v for c, v in zip(columns[:i], values[:i], strict=True)), beyond))
    return or_(*terms)


def set_next_headers(request: Request, response: Response, cursor: str | None) -> None:
    """`X-Next-Cursor` and `Link: <this query with cursor=...>; rel="next"`; nothing on the last page."""
    if cursor is None:
        return
    url = request.url.include_query_params(cursor=cursor)
    response.headers["X-Next-Cursor"] = cursor
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
