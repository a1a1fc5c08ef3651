"""Where the engine's bays and site rules come from: the YAML file, plus what operators edit.

- Bays live in the `bays` table. `source=config` rows mirror the file and are re-synced at every start
  (the file stays their source of truth, so the API refuses to edit them); `source=api` rows are the
  operators' own.
- Site rules: the file's `enforcement.rules`, overlaid by the fields an operator changed (stored under
  the `site_rules` key of `runtime_settings`). Storing only the changed fields keeps later edits of the
  file effective for every field nobody overrode; "reset" deletes the overlay.

A visit snapshots its rules on arrival, so none of these edits reaches a car already in the bay.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, select

from enforcement.rules import Rules, resolve_rules
from models.settings import BaySettings, EnforcementSettings
from models.tables import BayRow, RuntimeSetting

log = logging.getLogger(__name__)
SITE_RULES_KEY = "site_rules"


def bay_settings(row: BayRow) -> BaySettings:
    return BaySettings.model_validate(
        {
            "bay_id": row.bay_id,
            "site": row.site,
            "kind": row.kind,
            "charge_point_id": row.charge_point_id,
            "evse_id": row.evse_id,
            "connector_id": row.connector_id,
            "rules": row.rules or {},
            "output": row.output,
        }
    )


def fill_row(row: BayRow, bay: BaySettings) -> BayRow:
    row.kind, row.charge_point_id, row.site = bay.kind, bay.charge_point_id, bay.site
    row.evse_id, row.connector_id = bay.evse_id, bay.connector_id
    row.rules = dict(bay.rules)
    row.output = bay.output.model_dump(mode="json") if bay.output else None
    return row


def sync_config_bays(db: Session, cfg: EnforcementSettings, now: datetime) -> None:
    """Make the `source=config` rows equal the file's bays. A file bay replaces an operator's bay of the
    same id (the file wins, as for cameras); bays removed from the file are removed here."""
    existing = {b.bay_id: b for b in db.exec(select(BayRow))}
    wanted = {b.bay_id for b in cfg.bays}
    for bay in cfg.bays:
        row = fill_row(existing.get(bay.bay_id) or BayRow(bay_id=bay.bay_id), bay)
        row.source, row.updated_at = "config", now
        db.add(row)
    for bay_id, row in existing.items():
        if row.source == "config" and bay_id not in wanted:
            db.delete(row)
    db.commit()


def rules_overlay(db: Session) -> dict[str, Any]:
    row = db.get(RuntimeSetting, SITE_RULES_KEY)
    return dict(row.value) if row is not None else {}


def site_rules(db: Session, cfg: EnforcementSettings) -> Rules:
    """The file's site rules with the operators' overlay; an overlay the current code cannot accept
    (e.g. written by a newer version) is ignored rather than stopping the engine."""
    base = Rules.model_validate(cfg.rules)
    try:
        return resolve_rules(base, rules_overlay(db))
    except (ValidationError, ValueError) as exc:
        log.error("stored site rules overlay ignored (invalid): %s", str(exc).splitlines()[0])
        return base


def effective(db: Session, cfg: EnforcementSettings) -> EnforcementSettings:
    """The enforcement settings the engine runs with: bays from the table, rules with the overlay.
    Bay rows whose overrides no longer validate against the site rules are skipped, not fatal."""
    rules = site_rules(db, cfg)
    bays = []
    for row in db.exec(select(BayRow).order_by(BayRow.bay_id)):  # type: ignore[arg-type]
        try:
            bay = bay_settings(row)
            resolve_rules(rules, bay.rules)
        except (ValidationError, ValueError) as exc:
            log.error("bay %s skipped: its settings are invalid: %s", row.bay_id, str(exc).splitlines()[0])
            continue
        bays.append(bay)
    return EnforcementSettings(
        rules=rules.model_dump(mode="json"), bays=bays, sweep_every_s=cfg.sweep_every_s
    )


def changed_fields(base: Rules, edited: Rules) -> dict[str, Any]:
    """The fields of `edited` that differ from `base`, as JSON (what an overlay stores)."""
    # compared as Python values, so 30 and 30.00 (equal Decimals with different JSON) are no change
    a, b, out = base.model_dump(), edited.model_dump(), edited.model_dump(mode="json")
    return {k: out[k] for k, v in b.items() if a.get(k) != v}


def canonical_overrides(site: Rules, overrides: dict[str, Any]) -> dict[str, Any]:
    """A bay's overrides validated and in canonical JSON form ("5" -> 5, a partial schedule -> whole).
    Raises ValidationError/ValueError like `resolve_rules`."""
    resolved = resolve_rules(site, overrides).model_dump(mode="json")
    return {k: resolved[k] for k in overrides}

