"""Plate reads (the reads log) as JSON: filters, fuzzy plate search and cursor pages; viewers may read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from api import reads
from api.deps import DbSession, Viewer
from api.pagination import SaneTime
from models.tables import PlateReadRow

router = APIRouter(prefix="/api/v1/reads", tags=["reads"])

EVIDENCE = "/api/v1/evidence/"


class ReadOut(BaseModel):
    id: int
    at: datetime
    camera: str
    bay_id: str | None
    plate: str | None = Field(description="Normalised plate (A-Z0-9); null when the read was rejected unread")
    raw_text: str = Field(description="What the OCR read before normalising")
    confidence: float
    char_confidences: list[float]
    accepted: bool
    reject_reason: str | None
    crop_url: str | None = Field(description="Plate crop (JPEG, viewer session or token)")
    frame_url: str | None = Field(description="Whole camera frame (JPEG)")

    @classmethod
    def of(cls, row: PlateReadRow) -> ReadOut:
        return cls(
            id=row.id or 0,
            at=row.at,
            camera=row.camera,
            bay_id=row.bay_id,
            plate=row.plate,
            raw_text=row.raw_text,
            confidence=row.confidence,
            char_confidences=row.char_confidences,
            accepted=row.accepted,
            reject_reason=row.reject_reason,
            crop_url=EVIDENCE + row.crop_path if row.crop_path else None,
            frame_url=EVIDENCE + row.frame_path if row.frame_path else None,
        )


class ReadPageOut(BaseModel):
    items: list[ReadOut] = Field(description="Newest first")
    next: str | None = Field(
        description="Cursor of the next (older) page: repeat the request with the same "
        "filters and `cursor=<next>`; null on the last page. Reads stored "
        "meanwhile never shift or repeat rows on later pages."
    )
    matched_plates: list[str] | None = Field(
        None, description="Fuzzy searches only: the stored plates searched, nearest first"
    )
    matched_truncated: bool = Field(
        False, description=f"More than {reads.MAX_FUZZY_PLATES} plates matched; only the nearest were searched"
    )


def _unprocessable(exc: reads.FilterError) -> HTTPException:
    # Same shape as FastAPI's own validation errors, so clients handle one format.
    return HTTPException(422, [{"loc": ["query", k], "msg": v, "type": "value_error"} for k, v in exc.errors.items()])


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.get("", response_model=ReadPageOut, summary="Plate reads, newest first, one page")
def list_reads(
    db: DbSession,
    _: Viewer,
    camera: Annotated[str | None, Query(max_length=64, description="Camera name")] = None,
    plate: Annotated[str | None, Query(max_length=32, description="Plate; case, spaces and dashes are ignored")] = None,
    fuzzy: Annotated[
        int,
        Query(
            ge=0, le=reads.MAX_FUZZY, description="Also plates this many characters off (edit distance); needs `plate`"
        ),
    ] = 0,
    since: Annotated[datetime | None, Query(description="Reads at or after (ISO 8601; no zone means UTC)"),
                     SaneTime] = None,
    until: Annotated[datetime | None, Query(description="Reads before (ISO 8601; no zone means UTC)"), SaneTime] = None,
    min_conf: Annotated[float | None, Query(ge=0, le=1, description="Lowest confidence")] = None,
    accepted: Annotated[bool | None, Query(description="true: accepted reads only; false: rejected only")] = None,
    cursor: Annotated[str | None, Query(max_length=40, description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=reads.MAX_LIMIT, description="Reads per page")] = 50,
) -> ReadPageOut:
    try:
        f = reads.make_filter(
            camera=camera,
            plate=plate,
            fuzzy=fuzzy,
            since=_utc(since),
            until=_utc(until),
            min_conf=min_conf,
            accepted=accepted,
        )
        start = reads.Cursor.decode(cursor) if cursor else None
    except reads.FilterError as exc:
        raise _unprocessable(exc) from None
    reads.prime(db)
    page = reads.fetch(db, f, start, limit)
    return ReadPageOut(
        items=[ReadOut.of(r) for r in page.rows],
        next=page.next.encode() if page.next else None,
        matched_plates=page.matched_plates,
        matched_truncated=page.matched_truncated,
    )
