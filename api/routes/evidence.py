"""Evidence images: uploaded by edge workers (write-once), served only to logged-in operators."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse

from api.deps import Ctx, EvidenceUploader, Viewer
from api.limits import IMAGE_BODY
from models.files import write_once

router = APIRouter(prefix="/api/v1/evidence", tags=["evidence"], max_body_size=IMAGE_BODY)

# <camera>/<YYYY-MM-DD>/<name>.jpg: no "..", no absolute paths, nothing outside the evidence dir.
_PATH = re.compile(r"^[A-Za-z0-9_.-]{1,64}/\d{4}-\d{2}-\d{2}/[A-Za-z0-9_-]{1,100}\.jpg$")
MAX_BYTES = 8 << 20
MAX_SIDE = 8192  # a camera frame; larger claims are decompression bombs, not evidence
WRITE_ONCE = "evidence is write-once: another image is already stored under this path"
FILE_MODE = 0o640  # plate images are personal data


def _resolve(root: Path, rel: str) -> Path:
    if not _PATH.match(rel) or ".." in rel:
        raise HTTPException(400, "evidence path must look like CAMERA/YYYY-MM-DD/NAME.jpg")
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise HTTPException(400, "evidence path escapes the evidence folder")
    return path


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding; None if there is none."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def check_jpeg(body: bytes) -> None:
    """Refuse what is not a decodable JPEG of a camera's size (415 / 422)."""
    size = jpeg_size(body)
    if size is None:
        raise HTTPException(415, "evidence must be a JPEG image")
    w, h = size
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise HTTPException(422, f"evidence images are at most {MAX_SIDE}x{MAX_SIDE} pixels, not {w}x{h}")
    # Decode at 1/8 scale: proves the data is an image without paying for a full decode.
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if img is None:
        raise HTTPException(422, "evidence image could not be decoded (truncated or corrupt JPEG)")


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (never read whole first)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise HTTPException(413, f"{what} are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.put(
    "/{rel:path}",
    status_code=204,
    responses={
        400: {"description": "bad path"},
        403: {"description": "the token is not scoped for this camera"},
        409: {"description": "another image is already stored under this path (evidence is write-once)"},
        413: {"description": "too large"},
        415: {"description": "not a JPEG"},
    },
)
async def upload(rel: str, request: Request, ctx: Ctx, principal: EvidenceUploader) -> Response:
    """Store one evidence image. Write-once: the same bytes again answer 204 (a retried upload), other
    bytes under an existing path 409; an existing file is never replaced."""
    path = _resolve(ctx.settings.evidence_dir, rel)
    camera = rel.split("/", 1)[0]
    if not principal.may_post_for(f"camera:{camera}"):
        raise HTTPException(403, f"this token may not upload evidence for camera:{camera}")
    body = await read_limited(request, MAX_BYTES, "evidence images")
    check_jpeg(body)
    if write_once(path, body, FILE_MODE) == "different":
        raise HTTPException(409, WRITE_ONCE)
    return Response(status_code=204)


@router.get("/{rel:path}")
def download(rel: str, ctx: Ctx, _: Viewer) -> FileResponse:
    path = _resolve(ctx.settings.evidence_dir, rel)
    if not path.is_file():
        raise HTTPException(404, "no such evidence (it may have passed its retention period)")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
