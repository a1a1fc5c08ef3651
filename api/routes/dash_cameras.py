"""Dashboard pages for cameras, over the JSON routes in api/routes/cameras.py (validation and audit there).

`/dash/cameras` lists cameras with their live state and a thumbnail, adds one, starts/stops one or all;
`/dash/cameras/{name}` shows its picture with the zones drawn over it (SVG), edits its settings and zones,
deletes it. Cameras from the config file are shown read-only with the reason. "Test connection" posts
the form's URLs to `/dash/camera-test` (htmx) and shows the picture or the reason inline. Zones are
typed as `x,y x,y ...` (api/static/zones.js adds points by clicking on the picture) and checked here
point by point, so every error sits next to its field.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any, Literal
from urllib.parse import quote_plus

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, select

from api.deps import Ctx, DbSession, Operator, Principal, Viewer
from api.routes import cameras as cameras_api
from api.routes.dashboard import back, field_errors, form_dict, page
from models.tables import BayRow

router = APIRouter(prefix="/dash", include_in_schema=False)

_DONE = {"start": "started", "stop": "stopped"}
CONFIG_REASON = ("This camera is defined in the configuration file, which is the source of truth for it "
                 "(mirrored here at every start): change it there.")
MAX_ZONES = 32
_POINT = re.compile(r"^-?\d+(?:\.\d+)?,-?\d+(?:\.\d+)?$")
_ZONE_FIELD = re.compile(r"^zone-(\d{1,3})-(bay_id|points)$")


def _q(text: str) -> str:
    return quote_plus(text)


def _num(v: float) -> str:
    return f"{v:g}"


# --- list, add, start/stop ------------------------------------------------------------------


def _cameras_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
                  **context: Any) -> HTMLResponse:
    context.setdefault("form", {"fps": "5", "enabled": "on"})
    context.setdefault("errors", {})
    return page(request, "dash/cameras.html", principal, status_code=status_code,
                cameras=cameras_api.list_cameras(ctx, db, principal),
                recognition=ctx.cameras is not None, **context)


@router.get("/cameras", response_class=HTMLResponse)
def cameras_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, msg: str = "") -> HTMLResponse:
    return _cameras_page(request, ctx, db, principal, message=msg)


@router.post("/cameras", response_class=HTMLResponse)
async def add_camera(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    data: dict[str, Any] = {"name": form.get("name", ""), "url": form.get("url", ""),
                            "enabled": form.get("enabled") == "on", "fps": form.get("fps") or "5"}
    if form.get("sub_url"):
        data["sub_url"] = form["sub_url"]
    try:
        body = cameras_api.CameraCreate.model_validate(data)
        await cameras_api.add_camera(body, request, ctx, db, op)
    except ValidationError as exc:
        return _cameras_page(request, ctx, db, op, 422, form=form, errors=field_errors(exc))
    except HTTPException as exc:
        return _cameras_page(request, ctx, db, op, 422, form=form, errors={"name": str(exc.detail)})
    return back(f"/dash/cameras?msg=Camera+{_q(body.name)}+added")


@router.get("/camera-rows", response_class=HTMLResponse)
def cameras_status(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> HTMLResponse:
    """The status table alone, polled by the cameras page."""
    return page(request, "dash/_camera_rows.html", principal, cameras=cameras_api.list_cameras(ctx, db, principal),
                recognition=ctx.cameras is not None, with_actions=True)


@router.post("/recognition/{action}", response_class=HTMLResponse)
async def control_all(action: Literal["start", "stop"], request: Request, ctx: Ctx, db: DbSession,
                      op: Operator) -> Response:
    try:
        await cameras_api.control_all(action, request, ctx, db, op)
    except HTTPException as exc:
        return _cameras_page(request, ctx, db, op, 422, message=str(exc.detail), message_is_error=True)
    return back(f"/dash/cameras?msg=All+cameras+{_DONE[action]}")


# --- test connection (htmx fragment) --------------------------------------------------------

_HEADLINE = {"unreachable": "cannot reach the camera", "auth": "the camera refused the login",
             "not_video": "no video there", "timeout": "timed out", "error": "failed",
             "busy": "busy: too many tests at once"}


async def _test_one(label: str, url: str, camera: str | None, request: Request, ctx: Any, db: Session,
                    op: Principal) -> dict[str, Any]:
    out: dict[str, Any] = {"label": label, "ok": False}
    try:
        cameras_api.CameraTest.model_validate({"url": url, "camera": camera})
    except ValidationError as exc:
        out.update(kind="invalid", headline="not a stream URL", message=field_errors(exc).get("url", str(exc)))
        return out
    started = time.monotonic()
    try:
        shot = await cameras_api.test_url(url, camera, request, ctx, db, op)
    except ValueError as exc:
        out.update(kind="invalid", headline="not tested", message=str(exc))
        return out
    if shot.error is not None or shot.jpeg is None:
        kind = shot.error.kind if shot.error else "error"
        out.update(kind=kind, headline=_HEADLINE.get(kind, "failed"),
                   message=shot.error.message if shot.error else "no picture")
        return out
    out.update(ok=True, kind="ok", size=shot.size, seconds=f"{time.monotonic() - started:.1f}",
               data=base64.b64encode(shot.jpeg).decode())
    return out


@router.post("/camera-test", response_class=HTMLResponse)
async def camera_test(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> HTMLResponse:
    """Open the form's stream URL (and sub-stream URL) as a worker would; the pictures or the reasons.
    `test_camera` (the camera page's form) lets a masked password (`user:***@`) be the stored one."""
    form = await form_dict(request)
    camera = form.get("test_camera") or None
    if camera is not None:
        cameras_api._get(db, camera)  # 404 for a camera that is not there
    wanted = [("Main stream", form.get("url", ""))]
    if form.get("sub_url"):
        wanted.append(("Sub-stream", form["sub_url"]))
    results = []
    for label, url in wanted:  # one after the other: both share this request's database session
        results.append(await _test_one(label, url, camera, request, ctx, db, op))
    invalid = any(r["kind"] == "invalid" for r in results)
    return page(request, "dash/_camera_test.html", principal=op, status_code=422 if invalid else 200,
                results=results, timeout_s=int(cameras_api.SNAPSHOT_TIMEOUT_S))


# --- one camera: page, settings, zones, delete ----------------------------------------------


def _points_text(polygon: list[Any]) -> str:
    return " ".join(f"{_num(float(x))},{_num(float(y))}" for x, y in polygon)


def _overlay(zones: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored zones as SVG polygons with a label at their centre."""
    out = []
    for z in zones:
        poly = [(float(x), float(y)) for x, y in z.get("polygon", [])]
        if len(poly) < 3:
            continue
        cx = sum(p[0] for p in poly) / len(poly)
        cy = sum(p[1] for p in poly) / len(poly)
        out.append({"bay_id": z.get("bay_id", ""), "points": _points_text(poly), "x": round(cx), "y": round(cy)})
    return out


def _camera_page(name: str, request: Request, ctx: Any, db: Session, principal: Principal, status_code: int = 200,
                 form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                 zone_form: list[dict[str, str]] | None = None, zone_errors: dict[str, str] | None = None,
                 **context: Any) -> HTMLResponse:
    cam = cameras_api.get_camera(name, ctx, db, principal)
    if form is None:
        form = {"url": cam.url, "sub_url": cam.sub_url or "", "fps": _num(cam.fps),
                "enabled": "on" if cam.enabled else ""}
    if zone_form is None:
        zone_form = [{"bay_id": str(z.get("bay_id", "")), "points": _points_text(z.get("polygon", []))}
                     for z in cam.zones]
        zone_form.append({"bay_id": "", "points": ""})  # room for one more without script
    size = cameras_api.snapshots(request).size(cameras_api._get(db, name))
    bay_ids = list(db.exec(select(BayRow.bay_id).order_by(BayRow.bay_id)))
    return page(request, "dash/camera.html", principal, status_code=status_code, cam=cam,
                editable=cam.source != "config", config_reason=CONFIG_REASON, form=form, errors=errors or {},
                zone_form=zone_form, zone_errors=zone_errors or {}, overlay=_overlay(cam.zones), size=size,
                bay_ids=bay_ids, recognition=ctx.cameras is not None,
                timeout_s=int(cameras_api.SNAPSHOT_TIMEOUT_S), **context)


@router.get("/cameras/{name}", response_class=HTMLResponse)
def camera_page(name: str, request: Request, ctx: Ctx, db: DbSession, principal: Viewer, msg: str = "",
                error: str = "") -> HTMLResponse:
    return _camera_page(name, request, ctx, db, principal, message=error or msg, message_is_error=bool(error))


def _http_field_errors(exc: HTTPException) -> dict[str, str]:
    """`url: ...` style details from the API onto their field; anything else on top of the form."""
    detail = str(exc.detail)
    key, sep, msg = detail.partition(": ")
    if sep and key in ("url", "sub_url", "fps", "enabled", "zones"):
        return {key: msg}
    return {"_": detail}


@router.post("/cameras/{name}", response_class=HTMLResponse)
async def edit_camera(name: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    """Settings through PATCH /api/v1/cameras/{name}; a URL left masked (`user:***@`) keeps its password."""
    form = await form_dict(request)
    data: dict[str, Any] = {"url": form.get("url", ""), "sub_url": form.get("sub_url") or None,
                            "fps": form.get("fps") or "5", "enabled": form.get("enabled") == "on"}
    errors: dict[str, str] = {}
    try:
        body = cameras_api.CameraUpdate.model_validate(data)
        await cameras_api.update_camera(name, body, request, ctx, db, op)
    except ValidationError as exc:
        errors = field_errors(exc)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        errors = _http_field_errors(exc)
    if errors:
        return _camera_page(name, request, ctx, db, op, 422, form=form, errors=errors)
    return back(f"/dash/cameras/{name}?msg=Camera+saved")


def parse_points(text: str, size: tuple[int, int] | None = None) -> tuple[list[tuple[float, float]], str]:
    """`"x,y x,y ..."` (spaces after commas and line breaks allowed) -> (points, error or "")."""
    tokens = re.sub(r"\s*,\s*", ",", text.strip()).split()
    points: list[tuple[float, float]] = []
    for i, tok in enumerate(tokens, 1):
        if not _POINT.match(tok):
            return [], f"point {i} ({tok[:20]!r}) is not x,y: write the points as x,y separated by spaces"
        x, y = (float(v) for v in tok.split(","))
        if x < 0 or y < 0:
            return [], f"point {i} ({tok}) is outside the picture: coordinates start at 0,0 (top left)"
        if size is not None and (x > size[0] or y > size[1]):
            return [], f"point {i} ({tok}) is outside the {size[0]} x {size[1]} picture"
        if x > 10000 or y > 10000:
            return [], f"point {i} ({tok}) is too far out: coordinates are pixels of the picture"
        points.append((x, y))
    if len(points) < 3:
        return [], f"a zone needs at least 3 points (got {len(points)})"
    area = sum(points[i][0] * points[i - 1][1] - points[i - 1][0] * points[i][1] for i in range(len(points))) / 2
    if abs(area) < 1:
        return [], "the points enclose no area (all on one line?)"
    return points, ""


def zones_from_form(form: dict[str, str], size: tuple[int, int] | None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, str]]:
    """(zones for the API, the rows to show again, errors keyed `zone-{row}-{field}`). Empty rows are dropped."""
    rows: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        m = _ZONE_FIELD.match(key)
        if m:
            rows.setdefault(int(m.group(1)), {"bay_id": "", "points": ""})[m.group(2)] = value.strip()
    shown = [rows[i] for i in sorted(rows)]
    zones: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    seen: dict[str, int] = {}
    for i, row in enumerate(shown):
        bay_id, text = row["bay_id"], row["points"]
        if not bay_id and not text:
            continue
        if not bay_id:
            errors[f"zone-{i}-bay_id"] = "name the bay this zone watches"
        elif len(bay_id) > 64:
            errors[f"zone-{i}-bay_id"] = "at most 64 characters"
        elif bay_id in seen:
            errors[f"zone-{i}-bay_id"] = f"bay {bay_id} already has a zone on this camera (zone {seen[bay_id] + 1})"
        else:
            seen[bay_id] = i
        if not text:
            errors[f"zone-{i}-points"] = "add at least 3 points (click on the picture, or type x,y x,y x,y)"
            continue
        points, err = parse_points(text, size)
        if err:
            errors[f"zone-{i}-points"] = err
        else:
            zones.append({"bay_id": bay_id, "polygon": [list(p) for p in points]})
    if len(zones) > MAX_ZONES:
        errors["_"] = f"at most {MAX_ZONES} zones per camera"
    if not shown or shown[-1]["bay_id"] or shown[-1]["points"]:
        shown.append({"bay_id": "", "points": ""})
    return zones, shown, errors


@router.post("/cameras/{name}/zones", response_class=HTMLResponse)
async def edit_zones(name: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    """Zones through PATCH /api/v1/cameras/{name} (audited; workers and the engine reload)."""
    cam = cameras_api._get(db, name)  # 404 first
    form = await form_dict(request)
    zones, shown, errors = zones_from_form(form, cameras_api.snapshots(request).size(cam))
    if not errors:
        try:
            body = cameras_api.CameraUpdate.model_validate({"zones": zones})
            await cameras_api.update_camera(name, body, request, ctx, db, op)
        except ValidationError as exc:
            errors = {"_": field_errors(exc).get("zones", str(exc))}
        except HTTPException as exc:
            if exc.status_code == 404:
                raise
            errors = {"_": str(exc.detail)}
    if errors:
        return _camera_page(name, request, ctx, db, op, 422, zone_form=shown, zone_errors=errors)
    return back(f"/dash/cameras/{name}?msg={len(zones)}+zone{'' if len(zones) == 1 else 's'}+saved")


@router.post("/cameras/{name}/delete", response_class=HTMLResponse)
async def delete_camera(name: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    try:
        await cameras_api.delete_camera(name, request, ctx, db, op)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        return _camera_page(name, request, ctx, db, op, 422, message=str(exc.detail), message_is_error=True)
    return back(f"/dash/cameras?msg=Camera+{_q(name)}+deleted")


@router.post("/cameras/{name}/{action}", response_class=HTMLResponse)
async def control_camera(name: str, action: Literal["start", "stop"], request: Request, ctx: Ctx, db: DbSession,
                         op: Operator) -> Response:
    """Start or stop one camera's worker; `return_to=camera` comes back to the camera's own page."""
    form = await form_dict(request)
    to_camera = form.get("return_to") == "camera"
    try:
        await cameras_api.control_camera(name, action, request, ctx, db, op)
    except HTTPException as exc:
        if to_camera and exc.status_code != 404:
            return back(f"/dash/cameras/{name}?error={_q(str(exc.detail))}")
        return _cameras_page(request, ctx, db, op, 422, message=str(exc.detail), message_is_error=True)
    if to_camera:
        return back(f"/dash/cameras/{name}?msg=Camera+{_DONE[action]}")
    return back(f"/dash/cameras?msg=Camera+{_q(name)}+{_DONE[action]}")
