"""Imports flow one way: models <- anpr, ocpp_link, enforcement, sources <- service <- api <- baywarden (CLI).
`api/` is HTTP only (routes, templates, dependencies); the running service's parts live in `service/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# package -> the packages it must never import (directly or inside a function)
FORBIDDEN = {
    "models": {"anpr", "ocpp_link", "enforcement", "sources", "service", "api", "baywarden"},
    "anpr": {"ocpp_link", "enforcement", "sources", "service", "api", "baywarden"},
    "ocpp_link": {"anpr", "enforcement", "sources", "service", "api", "baywarden"},
    "enforcement": {"anpr", "ocpp_link", "sources", "service", "api", "baywarden"},
    "sources": {"anpr", "ocpp_link", "enforcement", "service", "api", "baywarden"},
    "service": {"api", "baywarden"},
    "api": {"baywarden"},
}
ORCHESTRATION = {"context", "camera_control", "enforcement_control", "relay_control", "scheduler", "notify",
                 "runtime_settings", "fleet"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    wrong = {}
    for path in (REPO / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert wrong == {}, f"{package} imports what sits above it: {wrong}"


def test_api_holds_no_process_orchestration():
    assert not [n for n in ORCHESTRATION if (REPO / "api" / f"{n}.py").exists()]
