"""Evidence images: uploaded by edge workers, served only to logged-in operators."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from api.deps import Ctx, Device, Viewer

router = APIRouter(prefix="/api/v1/evidence", tags=["evidence"])

# <camera>/<YYYY-MM-DD>/<name>.jpg: no "..", no absolute paths, nothing outside the evidence dir.
_PATH = re.compile(r"^[A-Za-z0-9_.-]{1,64}/\d{4}-\d{2}-\d{2}/[A-Za-z0-9_-]{1,100}\.jpg$")
MAX_BYTES = 8 << 20


def _resolve(root: Path, rel: str) -> Path:
    if not _PATH.match(rel) or ".." in rel:
        raise HTTPException(400, "evidence path must look like CAMERA/YYYY-MM-DD/NAME.jpg")
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise HTTPException(400, "evidence path escapes the evidence folder")
    return path


@router.put("/{rel:path}", status_code=204)
async def upload(rel: str, request: Request, ctx: Ctx, _: Device) -> None:
    path = _resolve(ctx.settings.evidence_dir, rel)
    body = await request.body()
    if len(body) > MAX_BYTES:
        raise HTTPException(413, f"evidence images are limited to {MAX_BYTES >> 20} MiB")
    if not body.startswith(b"\xff\xd8\xff"):
        raise HTTPException(415, "evidence must be a JPEG image")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(body)
    os.replace(tmp, path)  # atomic: a reader never sees half an image


@router.get("/{rel:path}")
def download(rel: str, ctx: Ctx, _: Viewer) -> FileResponse:
    path = _resolve(ctx.settings.evidence_dir, rel)
    if not path.is_file():
        raise HTTPException(404, "no such evidence (it may have passed its retention period)")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
