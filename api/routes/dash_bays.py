"""Dashboard pages for bays and site rules, over the JSON routes in api/routes/bays.py.

One rules form serves the site (every field has a value; empty = "none" for optional limits) and the
bays (empty = inherit the site's value, "none" = no limit for this bay), so operators learn one form.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from api.deps import Ctx, DbSession, Operator, Principal, Viewer
from api.routes import bays as bays_api
from api.routes.dashboard import back, page
from enforcement.rules import WEEKDAYS, Rules

router = APIRouter(prefix="/dash", include_in_schema=False)

# (section, [(field, label)]) in the order operators think about them.
RULE_GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Stay", [("max_stay_min", "Maximum stay (minutes)"), ("overstay_fee_per_min", "Overstay fee per minute"),
              ("overstay_fee_cap", "Overstay fee cap")]),
    ("Idle after charging", [("idle_grace_min", "Idle grace (minutes)"), ("idle_fee_per_min", "Idle fee per minute"),
                             ("idle_fee_cap", "Idle fee cap"), ("warn_before_idle", "Warn the driver when the grace "
                                                                                    "starts")]),
    ("Parked without charging", [("parked_without_charging_grace_min", "Grace (minutes)"),
                                 ("no_charging_fee", "Flat fee")]),
    ("When rules apply", [("min_occupancy_pct", "Only when the site is at least this % occupied"),
                          ("occupancy_recheck_min", "Re-check occupancy after (minutes)")]),
    ("Return ban", [("return_ban_hours", "Hours after an overstay"), ("return_ban_fee", "Flat fee")]),
    ("Review and matching", [("currency", "Currency (ISO 4217)"),
                             ("confirmation_threshold", "Review penalties of reads below this confidence"),
                             ("require_review", "An operator reviews every penalty"),
                             ("fuzzy_distance", "Fuzzy plate distance (characters)"),
                             ("camera_recover_min", "After a camera outage, wait (minutes)")]),
]
BOOL_FIELDS = {"warn_before_idle", "require_review"}
NULLABLE = {name for name, f in Rules.model_fields.items() if not f.is_required() and "None" in str(f.annotation)}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def rules_fields(values: dict[str, Any], inherit_from: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Field descriptors for the rules form. `inherit_from`: the site rules a bay form shows as placeholders."""
    groups = []
    for title, fields in RULE_GROUPS:
        items = []
        for name, label in fields:
            info = Rules.model_fields[name]
            site = _text(inherit_from.get(name)) if inherit_from is not None else None
            items.append({"name": name, "label": label, "hint": info.description or "", "value": values.get(name, ""),
                          "bool": name in BOOL_FIELDS, "nullable": name in NULLABLE,
                          "site": ("none" if site == "" else site) if site is not None else None})
        groups.append({"title": title, "fields": items})
    return groups


def form_values(rules: dict[str, Any]) -> dict[str, Any]:
    """A rules dict (JSON) as form text, schedule flattened."""
    out = {k: _text(v) for k, v in rules.items() if k != "schedule"}
    sched = rules.get("schedule")
    if isinstance(sched, dict):
        out["schedule.days"] = list(sched.get("days", WEEKDAYS))
        for k in ("start", "end", "timezone"):
            if k in sched:
                out[f"schedule.{k}"] = str(sched[k])[:5] if k != "timezone" else sched[k]
        out["own_schedule"] = "on"
    return out


def parse_rules_form(form: FormData, inherit: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rules dict for validation, the raw form values to show again). With `inherit`, empty fields are left
    out (the bay inherits them) and "none" clears an optional limit; without, empty optional = none."""
    raw: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name in Rules.model_fields:
        if name == "schedule":
            continue
        text = str(form.get(name, "")).strip()
        raw[name] = text
        if name in BOOL_FIELDS:
            if text in ("yes", "no"):
                data[name] = text == "yes"
            elif not inherit:
                data[name] = False
            continue
        if text == "":
            if not inherit:  # the site form has every field: blank means "none", an error where none is invalid
                data[name] = None
            continue
        data[name] = None if (text.lower() == "none" and name in NULLABLE) else text
    days = [d for d in form.getlist("schedule.days") if isinstance(d, str)]
    raw["schedule.days"] = days
    for k in ("start", "end", "timezone"):
        raw[f"schedule.{k}"] = str(form.get(f"schedule.{k}", "")).strip()
    raw["own_schedule"] = "on" if form.get("own_schedule") else ""
    if not inherit or raw["own_schedule"]:
        sched: dict[str, Any] = {"days": days}
        for k in ("start", "end", "timezone"):
            if raw[f"schedule.{k}"]:
                sched[k] = raw[f"schedule.{k}"]
        data["schedule"] = sched
    return data, raw


def _errors(exc: Exception) -> dict[str, str]:
    if isinstance(exc, ValidationError):
        out: dict[str, str] = {}
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            key = loc[0] if loc else "_"
            if key == "rules" and len(loc) > 1:
                key = loc[1]
            out.setdefault(key, str(err["msg"]).removeprefix("Value error, "))
        return out
    return {"_": str(exc)}


# --- bays ----------------------------------------------------------------------------------------


def _bays_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
               **context: Any) -> HTMLResponse:
    site = bays_api.rules_out(ctx, db).effective
    context.setdefault("form", {"kind": "bay", "out_method": "POST", "out_timeout_s": "3", "out_retries": "2"})
    context.setdefault("errors", {})
    return page(request, "dash/bays.html", principal, status_code=status_code,
                bays=bays_api.list_bays(ctx, db, principal),
                rule_groups=rules_fields(context["form"], inherit_from=site), weekdays=WEEKDAYS, **context)


@router.get("/bays", response_class=HTMLResponse)
def bays_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, msg: str = "") -> HTMLResponse:
    return _bays_page(request, ctx, db, principal, message=msg)


def _bay_from_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(bay dict, raw form to show again, early field errors)."""
    raw = {k: str(v).strip() for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    errors: dict[str, str] = {}
    bay: dict[str, Any] = {"kind": raw.get("kind") or "bay"}
    for key in ("charge_point_id", "evse_id", "connector_id"):
        bay[key] = raw.get(key) or None
    if raw.get("bay_id"):
        bay["bay_id"] = raw["bay_id"]
    if raw.get("out_url"):
        headers: dict[str, str] = {}
        for line in raw.get("out_headers", "").splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                errors["out_headers"] = f"write one header per line as Name: value (not {line.strip()[:40]!r})"
                break
            headers[name.strip()] = value.strip()
        bay["output"] = {"method": raw.get("out_method") or "POST", "url": raw["out_url"],
                         "body": raw.get("out_body", ""), "headers": headers,
                         "timeout_s": raw.get("out_timeout_s") or 3, "retries": raw.get("out_retries") or 2}
    rules, rules_raw = parse_rules_form(form, inherit=True)
    bay["rules"] = rules
    return bay, {**raw, **rules_raw}, errors


def _output_errors(errors: dict[str, str], exc: ValidationError) -> None:
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == "output" and len(loc) > 1:
            errors.setdefault(f"out_{loc[1]}", str(err["msg"]))


@router.post("/bays", response_class=HTMLResponse)
async def add_bay(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    bay, raw, errors = _bay_from_form(await request.form())
    if not errors:
        try:
            body = bays_api.BayIn.model_validate(bay)
            await bays_api.add_bay(body, request, ctx, db, op)
            return back(f"/dash/bays?msg=Bay+{body.bay_id}+added")
        except ValidationError as exc:
            errors = _errors(exc)
            _output_errors(errors, exc)
        except HTTPException as exc:
            errors = _http_errors(exc)
    return _bays_page(request, ctx, db, op, 422, form=raw, errors=errors)


def _http_errors(exc: HTTPException) -> dict[str, str]:
    detail = str(exc.detail)
    if detail.startswith("rules: "):
        field, _, msg = detail.removeprefix("rules: ").partition(": ")
        return {field.split(".")[0]: msg or detail}
    key = "charge_point_id" if "outlet" in detail else "bay_id"
    return {key: detail}


@router.get("/bays/{bay_id}", response_class=HTMLResponse)
def bay_page(bay_id: str, request: Request, ctx: Ctx, db: DbSession, principal: Viewer, msg: str = "") -> HTMLResponse:
    return _bay_page(bay_id, request, ctx, db, principal, message=msg)


def _bay_page(bay_id: str, request: Request, ctx: Ctx, db: DbSession, principal: Principal, message: str = "",
              status_code: int = 200, form: dict[str, Any] | None = None,
              errors: dict[str, str] | None = None) -> HTMLResponse:
    bay = bays_api.get_bay(bay_id, ctx, db, principal)
    site = bays_api.rules_out(ctx, db).effective
    if form is None:
        form = {k: _text(v) for k, v in bay.model_dump(exclude={"rules", "output"}).items() if v is not None}
        form.update(form_values(bay.rules))
        if bay.output is not None:
            out = bay.output
            form.update(out_method=out.method, out_url=out.url, out_body=out.body, out_timeout_s=str(out.timeout_s),
                        out_retries=str(out.retries),
                        out_headers="\n".join(f"{k}: {v}" for k, v in out.headers.items()))
    return page(request, "dash/bay.html", principal, status_code=status_code, bay=bay, form=form,
                errors=errors or {}, message=message, rule_groups=rules_fields(form, inherit_from=site),
                weekdays=WEEKDAYS)


@router.post("/bays/{bay_id}", response_class=HTMLResponse)
async def edit_bay(bay_id: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    bay, raw, errors = _bay_from_form(await request.form())
    bay.pop("bay_id", None)
    bay.setdefault("output", None)
    if not errors:
        try:
            body = bays_api.BayUpdate.model_validate(bay)
            await bays_api.update_bay(bay_id, body, request, ctx, db, op)
            return back(f"/dash/bays/{bay_id}?msg=Saved")
        except ValidationError as exc:
            errors = _errors(exc)
            _output_errors(errors, exc)
        except HTTPException as exc:
            if exc.status_code == 404:
                raise
            errors = _http_errors(exc) if exc.status_code != 409 or "outlet" in str(exc.detail) else {
                "_": str(exc.detail)}
    return _bay_page(bay_id, request, ctx, db, op, status_code=422, form=raw, errors=errors)


@router.post("/bays/{bay_id}/delete")
async def delete_bay(bay_id: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    try:
        await bays_api.delete_bay(bay_id, request, ctx, db, op)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        return _bay_page(bay_id, request, ctx, db, op, status_code=422, errors={"_": str(exc.detail)})
    return back(f"/dash/bays?msg=Bay+{bay_id}+deleted")


# --- site rules ----------------------------------------------------------------------------------


def _rules_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
                form: dict[str, Any] | None = None, **context: Any) -> HTMLResponse:
    rules = bays_api.rules_out(ctx, db)
    form = form if form is not None else form_values(rules.effective)
    context.setdefault("errors", {})
    return page(request, "dash/rules.html", principal, status_code=status_code, rules=rules, form=form,
                rule_groups=rules_fields(form), weekdays=WEEKDAYS, overridden=set(rules.overrides), **context)


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, msg: str = "") -> HTMLResponse:
    return _rules_page(request, ctx, db, principal, message=msg)


@router.post("/rules", response_class=HTMLResponse)
async def save_rules(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    data, raw = parse_rules_form(await request.form(), inherit=False)
    try:
        body = Rules.model_validate(data)
        await bays_api.put_rules(body, request, ctx, db, op)
    except ValidationError as exc:
        return _rules_page(request, ctx, db, op, 422, form=raw, errors=_errors(exc))
    except HTTPException as exc:
        return _rules_page(request, ctx, db, op, 422, form=raw, errors={"_": str(exc.detail)})
    return back("/dash/rules?msg=Site+rules+saved;+they+apply+to+visits+that+start+from+now")


@router.post("/rules/reset", response_class=HTMLResponse)
async def reset_rules(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    try:
        await bays_api.reset_rules(request, ctx, db, op)
    except HTTPException as exc:
        return _rules_page(request, ctx, db, op, 422, errors={"_": str(exc.detail)})
    return back("/dash/rules?msg=Site+rules+reset+to+the+config+file")

